//! Minimal command-line parsing shared by the daemons: `hsb-x [COMMAND] [-c FILE] [--set k=v]...`.

use std::path::PathBuf;

/// Parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// The command (first bare word), e.g. `run`, `status`, `activate`.
    pub command: Option<String>,
    /// `-c FILE` / `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--set key=value` overrides, in order.
    pub sets: Vec<String>,
    /// `--control PATH`.
    pub control: Option<PathBuf>,
    /// Boolean flags such as `--force` (without the dashes).
    pub flags: Vec<String>,
    /// Further bare words after the command.
    pub rest: Vec<String>,
    /// `--name value` options declared by the caller.
    pub values: Vec<(String, String)>,
}

impl Args {
    /// Parse `args` (without the program name). Flags that take no value are listed in
    /// `bool_flags`.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        bool_flags: &[&str],
    ) -> Result<Args, String> {
        Args::parse_with_values(args, bool_flags, &[])
    }

    /// Like [`Args::parse`], also accepting `--name value` for each of `value_opts`.
    pub fn parse_with_values(
        args: impl IntoIterator<Item = String>,
        bool_flags: &[&str],
        value_opts: &[&str],
    ) -> Result<Args, String> {
        let mut a = Args::default();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
            match arg.as_str() {
                "-c" | "--config" => a.config = Some(PathBuf::from(value(&arg)?)),
                "--control" => a.control = Some(PathBuf::from(value(&arg)?)),
                "--set" => a.sets.push(value(&arg)?),
                "-h" | "--help" => a.flags.push("help".into()),
                "-V" | "--version" => a.flags.push("version".into()),
                s if s.starts_with("--set=") => a.sets.push(s["--set=".len()..].to_string()),
                s if s.starts_with("--config=") => {
                    a.config = Some(PathBuf::from(&s["--config=".len()..]))
                }
                s if s.starts_with("--") && value_opts.contains(&&s[2..]) => {
                    let v = value(s)?;
                    a.values.push((s[2..].to_string(), v));
                }
                s if s.starts_with("--") => {
                    let name = &s[2..];
                    if bool_flags.contains(&name) {
                        a.flags.push(name.to_string());
                    } else {
                        return Err(format!("unknown option '{s}' (see --help)"));
                    }
                }
                s if s.starts_with('-') && s.len() > 1 => {
                    return Err(format!("unknown option '{s}' (see --help)"))
                }
                _ if a.command.is_none() => a.command = Some(arg),
                _ => a.rest.push(arg),
            }
        }
        Ok(a)
    }

    /// The value of a `--name value` option, if given (the last one wins).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a boolean flag was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

/// The command word of a command line that may not parse: the first bare word, skipping the
/// values of options that take one.
pub fn command_word(args: &[String], value_opts: &[&str]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" | "--config" | "--control" | "--set" => {
                it.next();
            }
            s if s.starts_with("--") && value_opts.contains(&&s[2..]) => {
                it.next();
            }
            s if s.starts_with('-') && s.len() > 1 => {}
            s => return Some(s.to_string()),
        }
    }
    None
}

/// The exit status of a usage error: 2, but for `status`, whose 2 means a daemon that is down,
/// [`crate::ctl::status::USAGE_EXIT`].
pub fn usage_exit(command: Option<&str>) -> u8 {
    if command == Some("status") {
        crate::ctl::status::USAGE_EXIT
    } else {
        2
    }
}

/// The git commit this build was made from (`git rev-parse --short=12 HEAD` at build time, or
/// `HSB_COMMIT` from the build's environment; "unknown" without either).
pub const COMMIT: &str = env!("HSB_COMMIT");

/// What `--version` prints: the release, the commit and the wire version. Daemons interoperate
/// only with the same wire version ([`crate::frame::VERSION`]): DEPLOY.md, "Upgrades".
pub fn version_line(daemon: &str, version: &str) -> String {
    format!(
        "{daemon} {version} (commit {COMMIT}, wire version {})",
        crate::frame::VERSION
    )
}

/// The last paragraph of every daemon's usage.
pub const LOGGING: &str = "Logging: HSB_LOG=debug|info|warn (default info).";

/// The daemons' common start: parse the command line; answer `--help` and `--version`.
/// `Err` carries the exit status when there is nothing more to do (help shown, or a usage error
/// reported as `daemon: message`, status [`usage_exit`]).
pub fn start(
    daemon: &str,
    version: &str,
    usage: &str,
    bool_flags: &[&str],
    value_opts: &[&str],
) -> Result<Args, std::process::ExitCode> {
    use std::process::ExitCode;
    // `std::env::args` would panic on an argument that is not UTF-8.
    let words = std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string().map_err(|a| {
                format!(
                    "argument '{}' is not UTF-8",
                    crate::config::excerpt(&a.to_string_lossy())
                )
            })
        })
        .collect::<Result<Vec<String>, String>>()
        .map_err(|e| {
            eprintln!("{daemon}: {e}");
            ExitCode::from(2)
        })?;
    let args = Args::parse_with_values(words.clone(), bool_flags, value_opts).map_err(|e| {
        eprintln!("{daemon}: {e}");
        ExitCode::from(usage_exit(command_word(&words, value_opts).as_deref()))
    })?;
    if args.flag("help") {
        println!("{usage}\n\n{LOGGING}");
        return Err(ExitCode::SUCCESS);
    }
    if args.flag("version") {
        println!("{}", version_line(daemon, version));
        return Err(ExitCode::SUCCESS);
    }
    Ok(args)
}

/// What the three daemons' command lines share: their name, usage, configuration schema and
/// default control socket.
pub struct Program {
    /// `hsb-primary`, ...
    pub name: &'static str,
    /// The usage text.
    pub usage: &'static str,
    /// The configuration keys.
    pub schema: fn() -> &'static [crate::config::KeySpec],
    /// The control socket when no configuration names one.
    pub control: &'static str,
    /// `xen-info DOMAIN`: what the Xen backend sees of a domain (the primary and the standby;
    /// the witness, which links no hypervisor code, has none). Returns the exit status.
    pub xen_info: Option<fn(&str, &[String]) -> u8>,
}

impl Program {
    /// A daemon's command line: its name, its default control socket, its usage and its
    /// configuration keys (no `xen-info`).
    pub const fn daemon(
        name: &'static str,
        control: &'static str,
        usage: &'static str,
        schema: fn() -> &'static [crate::config::KeySpec],
    ) -> Program {
        Program {
            name,
            usage,
            schema,
            control,
            xen_info: None,
        }
    }

    /// With `xen-info DOMAIN` (a daemon with a Xen backend).
    pub const fn with_xen_info(mut self, f: fn(&str, &[String]) -> u8) -> Program {
        self.xen_info = Some(f);
        self
    }

    /// Parse this process's command line ([`start`]): `Err` carries the exit status when
    /// there is nothing more to do (help or version shown, or a usage error reported).
    pub fn args(
        &self,
        bool_flags: &[&str],
        value_opts: &[&str],
    ) -> Result<Args, std::process::ExitCode> {
        start(
            self.name,
            env!("CARGO_PKG_VERSION"),
            self.usage,
            bool_flags,
            value_opts,
        )
    }

    /// The whole command line: parse it ([`Program::args`] with `bool_flags` and
    /// `value_opts`), give the command word to `own` (a daemon's own commands: `None` for a
    /// command it leaves to the others), then to [`Program::common`].
    pub fn main(
        &self,
        bool_flags: &[&str],
        value_opts: &[&str],
        own: impl FnOnce(&str, &Args) -> Option<std::process::ExitCode>,
    ) -> std::process::ExitCode {
        let args = match self.args(bool_flags, value_opts) {
            Ok(a) => a,
            Err(code) => return code,
        };
        let answered = args.command.as_deref().and_then(|c| own(c, &args));
        answered.unwrap_or_else(|| self.common(&args))
    }

    /// Report `msg` as `name: msg`; exit status 1.
    pub fn fail(&self, msg: &str) -> std::process::ExitCode {
        eprintln!("{}: {msg}", self.name);
        std::process::ExitCode::FAILURE
    }

    /// Load the configuration of `args` (file and `--set`s), its settings and its cluster key.
    pub fn load<S>(
        &self,
        args: &Args,
        settings: impl FnOnce(&crate::config::Config) -> Result<S, crate::config::ConfigError>,
    ) -> Result<(S, crate::key::ClusterKey, crate::config::Config), String> {
        let cfg = crate::config::Config::load((self.schema)(), args.config.as_deref(), &args.sets)
            .map_err(|e| e.to_string())?;
        let s = settings(&cfg).map_err(|e| e.to_string())?;
        let key = crate::key::ClusterKey::load_configured(&cfg, "cluster_key")
            .map_err(|e| e.to_string())?;
        Ok((s, key, cfg))
    }

    /// `check`: load and check the configuration and the key as `run` would, then print
    /// `configuration ok: ` and what `describe` says of the settings (exit 0), or the error
    /// (exit 1).
    pub fn check<S>(
        &self,
        args: &Args,
        settings: impl FnOnce(&crate::config::Config) -> Result<S, crate::config::ConfigError>,
        describe: impl FnOnce(&S) -> String,
    ) -> std::process::ExitCode {
        // What loading warns of (a renamed key) shows on stderr.
        crate::logging::init_at(self.name.trim_start_matches("hsb-"), "warn");
        match self.load(args, settings) {
            Ok((s, _, _)) => {
                println!("configuration ok: {}", describe(&s));
                std::process::ExitCode::SUCCESS
            }
            Err(e) => self.fail(&e),
        }
    }

    /// `run`: start logging (as `role`), install the signal handlers before the slow start-up
    /// (a SIGTERM sent meanwhile waits in the self-pipe and stops the loop at its first turn),
    /// `load` what the daemon needs (and the configuration SIGHUP compares against), and `run`
    /// it until a stop signal. Any error is reported as `name: error` (exit 1).
    pub fn run<L>(
        &self,
        args: &Args,
        role: &'static str,
        load: impl FnOnce(&Args) -> Result<(L, crate::config::Config), String>,
        run: impl FnOnce(L, crate::signals::SignalHandler) -> std::io::Result<()>,
    ) -> std::process::ExitCode {
        crate::logging::init(role);
        let signals = match crate::signals::SignalSource::install() {
            Ok(s) => s,
            Err(e) => return self.fail(&format!("cannot install signal handlers: {e}")),
        };
        let (loaded, cfg) = match load(args) {
            Ok(v) => v,
            Err(e) => return self.fail(&e),
        };
        let from = (args.config.clone(), args.sets.clone());
        let signals = crate::signals::SignalHandler::new(signals, from, cfg);
        match run(loaded, signals) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => self.fail(&e.to_string()),
        }
    }

    /// Send `line` to the running daemon's control socket and print the answer.
    pub fn control(&self, args: &Args, line: &str) -> std::process::ExitCode {
        std::process::ExitCode::from(crate::ctl::cli(
            self.name,
            args,
            (self.schema)(),
            self.control,
            line,
        ))
    }

    /// The commands every daemon answers the same way: `status` (and `status WORDS`),
    /// `keygen PATH`, `config-reference`, `xen-info DOMAIN` where it has one; anything else is
    /// a usage error (status 2).
    pub fn common(&self, args: &Args) -> std::process::ExitCode {
        use std::process::ExitCode;
        match args.command.as_deref() {
            Some("xen-info") if let Some(f) = self.xen_info => {
                ExitCode::from(f(self.name, &args.rest))
            }
            Some("status") if !args.rest.is_empty() => self.control(args, &args.rest.join(" ")),
            Some("status") => ExitCode::from(crate::ctl::status_cli(
                self.name,
                args,
                (self.schema)(),
                self.control,
            )),
            Some("keygen") => match args.rest.first().map(std::path::PathBuf::from) {
                Some(p) => match crate::key::ClusterKey::generate(&p) {
                    Ok(_) => {
                        println!(
                            "wrote a new cluster key to {} (mode 0600); copy it to every hsb node",
                            p.display()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => self.fail(&e.to_string()),
                },
                None => self.fail(&format!(
                    "keygen needs a path: {} keygen /etc/hsb/cluster.key",
                    self.name
                )),
            },
            Some("config-reference") => {
                print!("{}", crate::config::reference_markdown((self.schema)()));
                ExitCode::SUCCESS
            }
            Some(other) => {
                eprintln!(
                    "{}: unknown command '{other}'\n\n{}\n\n{LOGGING}",
                    self.name, self.usage
                );
                ExitCode::from(2)
            }
            None => {
                eprintln!("{}\n\n{LOGGING}", self.usage);
                ExitCode::from(2)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_commands_options_and_errors() {
        let a = Args::parse(
            v("run -c /etc/p.conf --set a=1 --set=b=2 --force x"),
            &["force"],
        )
        .unwrap();
        assert_eq!(a.command.as_deref(), Some("run"));
        assert_eq!(a.config, Some(PathBuf::from("/etc/p.conf")));
        assert_eq!(a.sets, vec!["a=1", "b=2"]);
        assert!(a.flag("force"));
        assert_eq!(a.rest, vec!["x"]);
        assert!(Args::parse(v("--bogus"), &[])
            .unwrap_err()
            .contains("unknown option '--bogus'"));
        assert!(Args::parse(v("-c"), &[])
            .unwrap_err()
            .contains("needs a value"));
    }

    #[test]
    fn version_names_release_commit_and_wire_version() {
        let v = version_line("hsb-witness", "1.2.3");
        assert!(v.starts_with("hsb-witness 1.2.3 (commit "), "{v}");
        assert!(
            v.ends_with(&format!(", wire version {})", crate::frame::VERSION)),
            "{v}"
        );
        assert!(!COMMIT.is_empty() && !COMMIT.contains(char::is_whitespace));
    }

    #[test]
    fn a_status_usage_error_does_not_exit_as_down() {
        assert_eq!(
            command_word(&v("-c status.conf --policy x status --bogus"), &["policy"]).as_deref(),
            Some("status")
        );
        assert_eq!(command_word(&v("--set a=b --frobnicate"), &[]), None);
        assert_eq!(usage_exit(Some("status")), 4);
        assert_eq!(usage_exit(Some("activate")), 2);
        assert_eq!(usage_exit(None), 2);
    }
}
