//! `cas-renewd generate-assets --dir DIR` (hidden): the man pages and the shell
//! completions, rendered from the same clap definitions the binary parses with,
//! so they cannot drift from the real options. The package build
//! (scripts/package-deb.sh) runs it; a subcommand rather than a build script or
//! an xtask because the definitions live in the binary, and a copy for either
//! would be a second source of truth.

use std::path::Path;

use anyhow::Context as _;
use cas_renewd::store::{self, FileSpec};

/// Files readable by everyone, like any installed documentation.
const PUBLIC: FileSpec = FileSpec {
    mode: 0o644,
    uid: None,
    gid: None,
};

/// Writes `cas-renewd.8`, one `cas-renewd-<command>.8` per visible subcommand,
/// and the completions for bash (`cas-renewd.bash`), zsh (`_cas-renewd`) and fish
/// (`cas-renewd.fish`) into `dir`; returns the file names.
pub fn generate(cmd: clap::Command, dir: &Path) -> anyhow::Result<Vec<String>> {
    store::safe_fs::create_dir_tree(dir, 0o755)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = cmd;
    cmd.build();
    let mut pages = vec![("cas-renewd.8".to_owned(), man_page(cmd.clone())?)];
    let visible = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help");
    for sub in visible {
        let name = format!("cas-renewd-{}", sub.get_name());
        let usage = format!("cas-renewd {}", sub.get_name());
        let page = man_page(sub.clone().display_name(&name).bin_name(usage))?;
        pages.push((format!("{name}.8"), page));
    }
    for (file, shell) in [
        ("cas-renewd.bash", clap_complete::Shell::Bash),
        ("_cas-renewd", clap_complete::Shell::Zsh),
        ("cas-renewd.fish", clap_complete::Shell::Fish),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "cas-renewd", &mut out);
        pages.push((file.to_owned(), out));
    }
    for (file, data) in &pages {
        store::write_file(&dir.join(file), data, PUBLIC)
            .with_context(|| format!("cannot write {}", dir.join(file).display()))?;
    }
    Ok(pages.into_iter().map(|(f, _)| f).collect())
}

fn man_page(cmd: clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .render(&mut out)
        .context("cannot render the man page")?;
    Ok(out)
}
