//! The man pages and shell completions come from the binary's own clap
//! definitions (`generate-assets`, hidden): every subcommand has a page naming its
//! options, and every shell's completion knows the subcommands. The .deb built
//! from them is checked by scripts/package-deb.sh (run by scripts/test.sh).

mod common;

use std::process::Command;

use common::process::BIN;
use common::show;

#[test]
fn man_pages_and_completions_are_generated_from_the_cli() {
    let d = tempfile::tempdir().expect("tempdir");
    let out = d.path().join("assets");
    let o = Command::new(BIN)
        .args(["generate-assets", "--dir"])
        .arg(&out)
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", show(&o));
    let read =
        |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let main = read("cas-renewd.8");
    assert!(
        main.starts_with(".ie") || main.contains(".TH cas-renewd 8"),
        "{main}"
    );
    for sub in [
        "run",
        "check-config",
        "list",
        "once",
        "renew",
        "import",
        "status",
        "reload",
    ] {
        let page = read(&format!("cas-renewd-{sub}.8"));
        assert!(
            page.contains(&format!(".TH cas-renewd-{sub} 8")),
            "{sub}: {page}"
        );
        let escaped = sub.replace('-', "\\-");
        assert!(main.contains(&escaped), "the main page lists {sub}");
    }
    // Options appear as the parser knows them (roff escapes the dashes).
    assert!(read("cas-renewd-check-config.8").contains("online"));
    assert!(read("cas-renewd-reload.8").contains("pid"));
    // The packagers' helper has no page (clap_complete still completes hidden
    // subcommands; that is harmless).
    assert!(!out.join("cas-renewd-generate-assets.8").exists());
    assert!(!main.contains("generate\\-assets"), "{main}");
    for f in ["cas-renewd.bash", "_cas-renewd", "cas-renewd.fish"] {
        let c = read(f);
        for sub in ["check-config", "once", "reload", "status"] {
            assert!(c.contains(sub), "{f} completes {sub}");
        }
    }
    let o = Command::new("bash")
        .arg("-n")
        .arg(out.join("cas-renewd.bash"))
        .output()
        .expect("bash");
    assert!(o.status.success(), "bash -n: {}", show(&o));
}
