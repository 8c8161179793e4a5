//! The mover's handle: one per process, shared by every core (cheap to clone). It holds the
//! engine, the settings, the tier registry, the counters and the little state that must be
//! process-wide (the restores running, the one pass at a time). What the mover does is
//! written beside it (`transition`, `restore`, `pass`, `deletes`, `reader`) as methods.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use ferrite_engine::Engine;

use crate::counters::{Counters, LifecycleStatus};
use crate::error::Result;
use crate::outbound::entra::EntraSettings;
use crate::outbound::http::Client;
use crate::settings::MoverSettings;
use crate::tiers::{Tier, TierInfo, TierList, TierSpec, Tiers};

#[derive(Clone)]
pub struct Mover(Arc<Shared>);

struct Shared {
    engine: Engine,
    settings: MoverSettings,
    tiers: Tiers,
    counters: Counters,
    /// Restores running in this process, by bucket and key.
    restoring: Mutex<HashSet<(String, String)>>,
    /// Set while a lifecycle pass runs: two would move the same objects at once.
    pass_running: AtomicBool,
}

impl Mover {
    /// The mover over `engine`. Tier credentials are sealed under a key derived from
    /// `root_password`; Blob, sign-in and KMS calls go through `http`.
    pub fn new(
        engine: Engine,
        settings: MoverSettings,
        root_password: &str,
        http: Client,
        entra: EntraSettings,
    ) -> Mover {
        Mover(Arc::new(Shared {
            engine,
            settings,
            tiers: Tiers::new(root_password, http, entra),
            counters: Counters::default(),
            restoring: Mutex::default(),
            pass_running: AtomicBool::new(false),
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }

    pub fn settings(&self) -> &MoverSettings {
        &self.0.settings
    }

    pub fn tiers(&self) -> &Tiers {
        &self.0.tiers
    }

    pub fn counters(&self) -> &Counters {
        &self.0.counters
    }

    pub(crate) fn restoring(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.0.restoring.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn pass_running(&self) -> &AtomicBool {
        &self.0.pass_running
    }

    /// Restores of transitioned objects running in this process now.
    pub fn restores_running(&self) -> u64 {
        self.restoring().len() as u64
    }

    /// What lifecycle passes and restores did since start-up.
    pub fn status(&self) -> LifecycleStatus {
        self.counters().status(self.restores_running())
    }

    /// The tier called `name`, if configured.
    pub fn tier(&self, name: &str) -> Result<Option<Arc<Tier>>> {
        self.tiers().get(self.engine(), name)
    }

    /// Whether a tier called `name` is configured (a Transition may name it).
    pub fn tier_exists(&self, name: &str) -> bool {
        self.tiers().exists(self.engine(), name)
    }

    pub fn list_tiers(&self) -> Result<TierList> {
        self.tiers().list(self.engine())
    }

    pub async fn add_tier(&self, name: &str, spec: &TierSpec, force: bool) -> Result<TierInfo> {
        self.tiers().add(self.engine(), name, spec, force).await
    }

    pub async fn edit_tier(&self, name: &str, spec: &TierSpec) -> Result<TierInfo> {
        self.tiers().edit(self.engine(), name, spec).await
    }

    pub async fn remove_tier(&self, name: &str) -> Result<()> {
        self.tiers().remove(self.engine(), name).await
    }
}
