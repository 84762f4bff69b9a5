//! A library user plugs their own `OtaOps` into `Builder` (as they can
//! `SystemOps`): the OTA service works on them, and the system's ops (what
//! `system.info` lists) include `ota` whenever the OTA service runs.
// Unwrap is fine in tests, but clippy's allow-unwrap-in-tests only covers
// `#[test]` functions, not this file's helpers.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use lwsys::messages::state::SystemState;
use lwsys::services::{OtaSettings, ServiceConfig};
use lwsys::Builder;
use lwsys_actors::ota::{Manifest, OtaError, OtaOps};

/// Records which ops were called.
struct Recording(Arc<Mutex<Vec<&'static str>>>);

/// Says when it is dropped.
struct DropSignal(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Ops that do nothing but say when the system lets go of them.
struct Watched(#[allow(dead_code, reason = "held for its Drop")] DropSignal);

impl OtaOps for Watched {
    fn start(&mut self, _m: &Manifest) -> Result<(), OtaError> {
        Ok(())
    }
    fn write(&mut self, _chunk: &[u8]) -> Result<(), OtaError> {
        Ok(())
    }
    fn abort(&mut self) -> Result<(), OtaError> {
        Ok(())
    }
    fn finalize(&mut self, _m: &Manifest) -> Result<(), OtaError> {
        Ok(())
    }
    fn report_current(&mut self, _bad: bool) -> Result<(), OtaError> {
        Ok(())
    }
    fn last_fw_unixtime(&self) -> u64 {
        0
    }
}

impl Recording {
    fn note(&self, call: &'static str) {
        self.0.lock().unwrap().push(call);
    }
}

impl OtaOps for Recording {
    fn on_boot(&mut self) -> Result<(), OtaError> {
        self.note("on_boot");
        Ok(())
    }
    fn start(&mut self, _m: &Manifest) -> Result<(), OtaError> {
        self.note("start");
        Ok(())
    }
    fn write(&mut self, _chunk: &[u8]) -> Result<(), OtaError> {
        Ok(())
    }
    fn abort(&mut self) -> Result<(), OtaError> {
        Ok(())
    }
    fn finalize(&mut self, _m: &Manifest) -> Result<(), OtaError> {
        Ok(())
    }
    fn report_current(&mut self, _bad: bool) -> Result<(), OtaError> {
        Ok(())
    }
    fn last_fw_unixtime(&self) -> u64 {
        self.note("last_fw_unixtime");
        1_700_000_000
    }
}

/// OTA settings with a fresh issuer key written under `dir`, fetching from
/// a port nothing listens on (no check runs in these tests).
fn ota_settings(dir: &Path) -> OtaSettings {
    let (_private, public) = lwsys_actors::ota::keygen();
    let key = dir.join("issuer.jwk");
    std::fs::write(&key, public).unwrap();
    OtaSettings::new("http://127.0.0.1:9", "test-variant", &key)
}

#[actix_rt::test]
async fn plugged_ota_ops_are_the_ones_the_ota_service_and_the_system_ops_call() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    // No state dir: the plugged ops need no slot directory.
    let cfg = ServiceConfig { ota: Some(ota_settings(dir.path())), ..ServiceConfig::default() };
    let h = Builder::new()
        .boot_target(SystemState::ContextCreated)
        .ota_ops(Box::new(Recording(calls.clone())))
        .services(cfg)
        .start()
        .unwrap();
    assert!(h.services().unwrap().ota.is_some(), "the OTA service runs");
    // The service ran the boot bookkeeping on the plugged ops, once.
    assert_eq!(*calls.lock().unwrap(), ["on_boot"]);
    assert!(h.ops().present().contains(&"ota"), "{:?}", h.ops().present());
    // The system's ops reach the same ops object.
    assert_eq!(h.ops().with_ota_ops(|o| o.last_fw_unixtime()), Ok(1_700_000_000));
    assert_eq!(*calls.lock().unwrap(), ["on_boot", "last_fw_unixtime"]);
}

#[actix_rt::test]
async fn system_ops_list_ota_exactly_when_the_ota_service_runs() {
    let bare = Builder::new().boot_target(SystemState::ContextCreated).start().unwrap();
    assert!(!bare.ops().present().contains(&"ota"), "{:?}", bare.ops().present());
    let no_ota = Builder::new()
        .boot_target(SystemState::ContextCreated)
        .services(ServiceConfig::default())
        .start()
        .unwrap();
    assert!(!no_ota.ops().present().contains(&"ota"), "{:?}", no_ota.ops().present());

    // The default ops: the A/B slots under the state dir.
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServiceConfig {
        state_dir: Some(dir.path().to_owned()),
        ota: Some(ota_settings(dir.path())),
        ..ServiceConfig::default()
    };
    let h = Builder::new().boot_target(SystemState::ContextCreated).services(cfg).start().unwrap();
    assert!(h.ops().present().contains(&"ota"), "{:?}", h.ops().present());
    assert_eq!(h.ops().with_ota_ops(|o| o.last_fw_unixtime()), Ok(0), "no install yet");
}

#[actix_rt::test]
async fn a_dropped_system_with_ota_lets_go_of_its_ota_ops() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let cfg = ServiceConfig { ota: Some(ota_settings(dir.path())), ..ServiceConfig::default() };
    let h = Builder::new()
        .boot_target(SystemState::ContextCreated)
        .ota_ops(Box::new(Watched(DropSignal(Some(tx)))))
        .services(cfg)
        .start()
        .unwrap();
    assert!(h.ops().present().contains(&"ota"));
    drop(h);
    // The OTA service, its factory, the reboot channel and the handle's
    // ops all go with the system: nothing they form keeps the ops alive.
    let freed = tokio::time::timeout(std::time::Duration::from_secs(20), rx).await;
    assert_eq!(freed.ok(), Some(Ok(())), "the OTA ops outlived their system");
}
