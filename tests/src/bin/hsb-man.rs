//! `hsb-man BIN_DIR OUT_DIR`: write OUT_DIR/hsb-{primary,standby,witness}.8 from what the
//! binaries in BIN_DIR print (`--help`, `--version`, `config-reference`); see `hsb_tests::man`.

use std::path::Path;
use std::process::{Command, ExitCode};

fn say(bin: &Path, arg: &str) -> Result<String, String> {
    let out = Command::new(bin)
        .arg(arg)
        .output()
        .map_err(|e| format!("{} {arg}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!("{} {arg}: {}", bin.display(), out.status));
    }
    String::from_utf8(out.stdout).map_err(|_| format!("{} {arg}: not UTF-8", bin.display()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bins, out] = args.as_slice() else {
        eprintln!("usage: hsb-man BIN_DIR OUT_DIR");
        return ExitCode::from(2);
    };
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!("hsb-man: {out}: {e}");
        return ExitCode::FAILURE;
    }
    for daemon in ["hsb-primary", "hsb-standby", "hsb-witness"] {
        let bin = Path::new(bins).join(daemon);
        let page = (|| {
            Ok::<_, String>(hsb_tests::man::render(
                daemon,
                &say(&bin, "--help")?,
                &say(&bin, "--version")?,
                &say(&bin, "config-reference")?,
            ))
        })();
        let path = Path::new(out).join(format!("{daemon}.8"));
        match page.and_then(|p| std::fs::write(&path, p).map_err(|e| e.to_string())) {
            Ok(()) => println!("{}", path.display()),
            Err(e) => {
                eprintln!("hsb-man: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
