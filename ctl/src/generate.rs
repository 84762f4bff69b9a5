//! `lwsysctl completions` and `lwsysctl man`: shell completion scripts
//! (clap_complete) and roff man pages (clap_mangen), both generated from
//! the same clap definitions the parser uses, so they never drift. They
//! need no daemon and ignore `--json` (their output is a script or roff).
//! The daemon's own page comes from the daemon (`lwsysd --man`): the
//! client does not link lwsysd's command line.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, CtlError, Outcome};

/// `lwsysctl completions SHELL`
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for (bash, zsh, fish, elvish, powershell).
    pub shell: Shell,
}

/// `lwsysctl man [PAGE] [--dir DIR]`
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The page: lwsysctl (default), or a subcommand's own page such as
    /// lwsysctl-ota or lwsysctl-ota-publish. (lwsysd's page: `lwsysd --man`.)
    #[arg(value_name = "PAGE")]
    pub page: Option<String>,
    /// Instead of printing one page, write every page (lwsysctl.1, one
    /// lwsysctl-*.1 per subcommand) into DIR and list them.
    #[arg(long, value_name = "DIR", conflicts_with = "page")]
    pub dir: Option<PathBuf>,
}

/// Print the completion script for `a.shell`.
pub(crate) fn completions(a: &CompletionsArgs, out: &mut dyn Write) -> Outcome {
    let mut cmd = Cli::command();
    // Into a buffer first: clap_complete panics when its writer fails, and
    // a reader that went away (`| head`) is no reason to.
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "lwsysctl", &mut script);
    let _ = out.write_all(&script);
    Outcome::ok()
}

/// The `lwsysctl` command tree with every subcommand's display name set
/// (`lwsysctl-ota-publish`), as its man pages are named.
fn ctl_command() -> clap::Command {
    // propagate_version: each page's footer names the version, not just
    // the subcommand.
    let mut cmd = Cli::command().disable_help_subcommand(true).propagate_version(true);
    cmd.build();
    cmd
}

/// The page called `name` in the tree under `cmd`.
fn find(cmd: &clap::Command, name: &str) -> Option<clap::Command> {
    let own = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    if own == name {
        return Some(cmd.clone());
    }
    cmd.get_subcommands().find_map(|s| find(s, name))
}

fn render(cmd: clap::Command, out: &mut dyn Write) -> Result<(), CtlError> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .map_err(|e| CtlError::Usage(format!("man: cannot render the page: {e}")))?;
    // As for any output: a reader that went away ends it quietly.
    let _ = out.write_all(&page);
    Ok(())
}

/// What `lwsysctl man lwsysd` says: the daemon prints its own page.
pub(crate) const LWSYSD_PAGE: &str =
    "man: lwsysd's page comes from the daemon: lwsysd --man | man -l -  (or lwsysd --man > lwsysd.1)";

/// Print one man page, or write them all to `--dir`.
pub(crate) fn man(a: &ManArgs, out: &mut dyn Write) -> Result<Outcome, CtlError> {
    if let Some(dir) = &a.dir {
        return write_all(dir, out);
    }
    let name = a.page.as_deref().unwrap_or("lwsysctl");
    if name == "lwsysd" {
        return Err(CtlError::Usage(LWSYSD_PAGE.to_owned()));
    }
    let Some(cmd) = find(&ctl_command(), name) else {
        return Err(CtlError::Usage(format!(
            "man: no page {name:?} (try lwsysctl or lwsysctl-<subcommand>; lwsysd's page: lwsysd --man)"
        )));
    };
    render(cmd, out)?;
    Ok(Outcome::ok())
}

fn write_all(dir: &Path, out: &mut dyn Write) -> Result<Outcome, CtlError> {
    let fail = |e: std::io::Error| CtlError::Usage(format!("man: {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(fail)?;
    clap_mangen::generate_to(Cli::command().propagate_version(true), dir).map_err(fail)?;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(fail)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".1") && n.starts_with("lwsysctl"))
        .collect();
    names.sort();
    for n in names {
        let _ = writeln!(out, "{}", dir.join(n).display());
    }
    Ok(Outcome::ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_a_page_by_its_display_name() {
        let root = ctl_command();
        assert!(find(&root, "lwsysctl-ota-publish").is_some());
        assert!(find(&root, "lwsysctl-blob-get").is_some());
        assert!(find(&root, "lwsysctl-nope").is_none());
        // The client does not link the daemon: it points at `lwsysd --man`.
        let mut page = Vec::new();
        let msg = match man(&ManArgs { page: Some("lwsysd".into()), dir: None }, &mut page) {
            Err(CtlError::Usage(m)) => m,
            _ => String::new(),
        };
        assert!(msg.contains("lwsysd --man"), "{msg}");
        assert!(page.is_empty());
    }
}
