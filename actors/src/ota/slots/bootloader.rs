//! The hook that tells a real bootloader which slot to boot.

use std::process::Command;

use lwsys_messages::ota::OtaError;

/// The hook telling a real bootloader which slot to boot.
#[derive(Debug, Clone, Default)]
pub struct Bootloader {
    argv: Vec<String>,
}

impl Bootloader {
    /// Only records the selection in the state file (the default).
    pub fn record_only() -> Self {
        Self::default()
    }

    /// Runs `line` (split on whitespace, no shell) with the slot name as
    /// the last argument after every change of selection.
    pub fn command(line: &str) -> Self {
        Self { argv: line.split_whitespace().map(str::to_owned).collect() }
    }

    pub(super) fn run(&self, slot: &str) -> Result<(), OtaError> {
        let Some((prog, args)) = self.argv.split_first() else {
            return Ok(());
        };
        let status = Command::new(prog)
            .args(args)
            .arg(slot)
            .status()
            .map_err(|e| OtaError::Io(format!("bootloader hook {prog}: {e}")))?;
        if !status.success() {
            return Err(OtaError::Io(format!("bootloader hook {prog}: {status}")));
        }
        Ok(())
    }
}
