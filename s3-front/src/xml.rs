//! S3 XML: a small writer for responses and readers for the request documents we accept.

use crate::error::{err, Code, S3Result};

pub const XML_DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
pub const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => {
                out.push_str(&format!("&#x{:X};", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// Builds an XML document; elements are closed in order by `end`.
pub struct Xml {
    out: String,
    open: Vec<&'static str>,
}

impl Xml {
    pub fn new(root: &'static str) -> Self {
        let mut out = String::from(XML_DECL);
        out.push_str(&format!("<{root} xmlns=\"{S3_NS}\">"));
        Self { out, open: vec![root] }
    }
    pub fn start(&mut self, name: &'static str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self.open.push(name);
        self
    }
    pub fn end(&mut self) -> &mut Self {
        if let Some(name) = self.open.pop() {
            self.out.push_str("</");
            self.out.push_str(name);
            self.out.push('>');
        }
        self
    }
    pub fn elem(&mut self, name: &str, value: &str) -> &mut Self {
        self.out.push_str(&format!("<{name}>{}</{name}>", escape(value)));
        self
    }
    pub fn finish(mut self) -> Vec<u8> {
        while !self.open.is_empty() {
            self.end();
        }
        self.out.into_bytes()
    }
}

pub use ferrite_tiering::xml::{Node, XML_DEPTH_MAX, XML_NODES_MAX};

/// Parses a request document into a tree (namespaces dropped, depth and node count bounded:
/// the one parser in `ferrite_tiering::xml`). Malformed input is MalformedXML.
pub fn parse(body: &[u8]) -> S3Result<Node> {
    ferrite_tiering::xml::parse(body).map_or_else(malformed, Ok)
}

fn malformed<T>() -> S3Result<T> {
    err(
        Code::MalformedXML,
        "The XML you provided was not well-formed or did not validate against our published schema.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_complete_multipart_and_rejects_garbage() {
        let doc = br#"<?xml version="1.0"?><CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
            <Part><PartNumber>1</PartNumber><ETag>"a&amp;b"</ETag></Part><Part><PartNumber>2</PartNumber><ETag>x</ETag></Part>
            </CompleteMultipartUpload>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "CompleteMultipartUpload");
        let parts: Vec<_> = root.all("Part").collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].text_of("ETag"), Some("\"a&b\""));
        for bad in [&b"<a><b></a>"[..], b"<a>", b"", b"<a></a><b></b>", b"text"] {
            assert_eq!(parse(bad).unwrap_err().code, Code::MalformedXML, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn every_kind_of_node_counts_toward_the_limit() {
        let doc = |inner: &str| format!("<Delete>{inner}</Delete>").into_bytes();
        // Just under the limit parses (the root is a node too).
        let fits = "<a/>".repeat(XML_NODES_MAX - 1);
        assert_eq!(parse(&doc(&fits)).unwrap().children.len(), XML_NODES_MAX - 1);
        for node in ["<a/>", "<a></a>", "<!--c-->", "<?pi x?>", "<![CDATA[x]]><a/>"] {
            let over = node.repeat(XML_NODES_MAX + 1);
            assert_eq!(parse(&doc(&over)).unwrap_err().code, Code::MalformedXML, "{node}");
        }
        // Empty elements nest no deeper than others.
        let deep = format!("{}<e/>{}", "<a>".repeat(XML_DEPTH_MAX), "</a>".repeat(XML_DEPTH_MAX));
        assert_eq!(parse(deep.as_bytes()).unwrap_err().code, Code::MalformedXML);
        let ok = format!("{}<e/>{}", "<a>".repeat(XML_DEPTH_MAX - 1), "</a>".repeat(XML_DEPTH_MAX - 1));
        assert!(parse(ok.as_bytes()).is_ok());
        assert_eq!(parse(b"<a/><b/>").unwrap_err().code, Code::MalformedXML);
    }

    #[test]
    fn writer_escapes() {
        let mut x = Xml::new("R");
        x.start("A").elem("K", "a<b&\"c\"").end();
        let s = String::from_utf8(x.finish()).unwrap();
        assert!(s.ends_with(
            "<R xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><A><K>a&lt;b&amp;&quot;c&quot;</K></A></R>"
        ));
    }
}
