//! How the KMS clients (`vault`, `key_vault`) fail. Each failure is logged where it is
//! found, with the KMS's own words; the S3 layer turns it into an S3 error for the client.

/// A KMS call that did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// No answer, or an overloaded KMS (429, 5xx): nothing can be sealed or opened now.
    #[error("the KMS cannot be reached: {0}")]
    Unreachable(String),
    /// The KMS has no such key (or key version); the text is for the client.
    #[error("{0}")]
    NoSuchKey(String),
    /// The KMS (or the identity it needs) refused Ferrite; the text is for the client, the
    /// details are in the server log.
    #[error("{0}")]
    Refused(String),
    /// An answer Ferrite does not understand, to the call named.
    #[error("the KMS answered {0} in a way Ferrite does not understand")]
    Broken(String),
}

impl KmsError {
    /// The KMS cannot be reached: `why` goes to the log.
    pub fn unreachable(why: impl std::fmt::Display) -> KmsError {
        tracing::warn!("KMS unreachable: {why}");
        KmsError::Unreachable(why.to_string())
    }

    /// The KMS answered `what` with `detail`, which Ferrite cannot use: the first 200
    /// characters of it go to the log.
    pub fn broken(what: &str, detail: &str) -> KmsError {
        let shown: String = detail.chars().take(200).collect();
        tracing::warn!("KMS {what}: unexpected answer: {shown}");
        KmsError::Broken(what.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unexpected_answers_are_shown_cut_at_a_character_boundary() {
        let e = KmsError::broken("test", &"é".repeat(150));
        assert_eq!(e.to_string(), "the KMS answered test in a way Ferrite does not understand");
    }
}
