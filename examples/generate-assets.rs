//! Generates what the Debian package ships from the CLI definition: a man page for
//! `drover` and one per visible subcommand (`drover-kill.1`, `drover-rules-check.1`, …),
//! gzipped, and completions for bash, zsh and fish. Not shipped itself; `packaging/build-deb`
//! runs it:
//!
//! ```sh
//! cargo run --release --example generate-assets -- target/assets
//! ```
//!
//! writes `<dir>/man/*.1.gz` and `<dir>/completions/{drover.bash,_drover,drover.fish}`.

use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let out: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or("usage: generate-assets OUT_DIR")?
        .into();
    let command = visible(&drover::cli::Cli::command());

    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    // Built once from the top, so that each subcommand knows its full name
    // (`drover-rules-check`) and has the global --user/--system options.
    let mut built = command.clone().disable_help_subcommand(true);
    built.build();
    let source = format!("drover {}", env!("CARGO_PKG_VERSION"));
    man_pages(&built, &man, &source)?;

    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command.clone(), "drover", &completions)?;
    }
    Ok(())
}

/// `drover` without its hidden subcommands (`__shim`): clap_complete would offer them,
/// and they are no operator's to type or read about. clap has no way to take a subcommand
/// out, so the top level is put together again around the visible ones (only the top level
/// has hidden subcommands).
fn visible(command: &Command) -> Command {
    let mut pruned = Command::new("drover")
        .version(env!("CARGO_PKG_VERSION"))
        .args(command.get_arguments().cloned())
        .subcommands(
            command
                .get_subcommands()
                .filter(|s| !s.is_hide_set())
                .cloned(),
        )
        .subcommand_required(command.is_subcommand_required_set());
    if let Some(about) = command.get_about() {
        pruned = pruned.about(about.clone());
    }
    pruned
}

/// Writes `<name>.1.gz` for `command` and each of its subcommands, depth first.
fn man_pages(command: &Command, dir: &Path, source: &str) -> Result<()> {
    for sub in command.get_subcommands() {
        man_pages(sub, dir, source)?;
    }
    let page = clap_mangen::Man::new(command.clone())
        .source(source)
        .manual("drover manual");
    let path = page.generate_to(dir)?;
    gzip(&path)
}

/// Replaces `path` with `path.gz`. `gzip -9n`: Debian wants man pages compressed at the
/// highest level, and without a name or time stamp so that builds are reproducible.
fn gzip(path: &Path) -> Result<()> {
    let mut gz = path.as_os_str().to_owned();
    gz.push(".gz");
    let status = std::process::Command::new("gzip")
        .args(["-9n", "--stdout"])
        .arg(path)
        .stdout(std::fs::File::create(gz)?)
        .status()?;
    if !status.success() {
        return Err(format!("gzip {}: {status}", path.display()).into());
    }
    std::fs::remove_file(path)?;
    Ok(())
}
