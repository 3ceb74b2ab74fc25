//! `warrenctl`: rabbitmqctl's command names, flags, columns, output and exit codes,
//! over Warren's (or RabbitMQ's) HTTP management API. No broker code: everything it
//! knows comes from the API, so it works against any broker that serves it.
//!
//! This file owns the command line (global and per-command flags, in any position, as
//! rabbitmqctl takes them) and the exit codes; `commands` owns what each command asks
//! and prints, `format` the table and JSON output, `http` the client.
//! Invoked through a link named `rabbitmqctl` it behaves the same and names itself so
//! in usage errors, so `sudo rabbitmqctl list_queues` from the notes works.

/// `print!` that survives a closed pipe (`warrenctl list_queues | head -1`): std's
/// panics on EPIPE, since Rust ignores SIGPIPE.
macro_rules! out {
    ($($t:tt)*) => { $crate::emit(&format!($($t)*)) };
}
macro_rules! outln {
    ($($t:tt)*) => { $crate::emit(&format!("{}\n", format!($($t)*))) };
}

mod admin;
mod commands;
mod format;
mod http;
mod policies;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// rabbitmqctl's exit codes (sysexits.h), which scripts test for.
pub const EX_USAGE: u8 = 64;
pub const EX_DATAERR: u8 = 65;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_SOFTWARE: u8 = 70;
/// A command the broker refused or could not carry out.
pub const EX_FAILED: u8 = 2;

/// Why a command stopped: the exit code and the text for stderr.
#[derive(Debug)]
pub struct Fail {
    pub code: u8,
    pub msg: String,
}

impl Fail {
    pub fn usage(msg: impl Into<String>) -> Fail {
        Fail {
            code: EX_USAGE,
            msg: format!("Error (argument validation): {}", msg.into()),
        }
    }
    pub fn unreachable(msg: impl Into<String>) -> Fail {
        Fail {
            code: EX_UNAVAILABLE,
            msg: msg.into(),
        }
    }
    pub fn internal(msg: impl Into<String>) -> Fail {
        Fail {
            code: EX_SOFTWARE,
            msg: format!("Error: {}", msg.into()),
        }
    }
    pub fn failed(msg: impl Into<String>) -> Fail {
        Fail {
            code: EX_FAILED,
            msg: format!("Error:\n{}", msg.into()),
        }
    }
    /// rabbitmqctl's "Error:" on its own line, then the reason, with its own code.
    pub fn error(code: u8, msg: impl Into<String>) -> Fail {
        Fail {
            code,
            msg: format!("Error:\n{}", msg.into()),
        }
    }
}

pub struct Opts {
    pub prog: String,
    pub url: String,
    pub username: String,
    pub password: String,
    pub vhost: String,
    pub quiet: bool,
    pub headers: bool,
    pub json: bool,
    /// Seconds, as `--timeout` takes them; also the HTTP client's whole-call limit.
    pub timeout: f64,
    pub timeout_given: bool,
    pub if_empty: bool,
    pub if_unused: bool,
    pub global: bool,
    /// `add_vhost --description`, `--tags`, `--default-queue-type`.
    pub description: Option<String>,
    pub vhost_tags: Option<String>,
    pub default_queue_type: Option<String>,
    /// `list_user_limits --user`.
    pub limit_user: Option<String>,
    /// `set_policy`/`set_operator_policy` `--priority` and `--apply-to`.
    pub priority: Option<String>,
    pub apply_to: Option<String>,
    pub command: String,
    pub args: Vec<String>,
}

/// Flags that only some commands take: anything else given them is a usage error, as
/// rabbitmqctl's per-command option validation makes it.
const COMMAND_FLAGS: &[(&str, &[&str])] = &[
    ("--if-empty", &["delete_queue"]),
    ("--if-unused", &["delete_queue"]),
    (
        "--global",
        &[
            "close_all_connections",
            "list_user_limits",
            "list_vhost_limits",
        ],
    ),
    ("--description", &["add_vhost"]),
    ("--tags", &["add_vhost"]),
    ("--default-queue-type", &["add_vhost"]),
    ("--user", &["list_user_limits"]),
    ("--priority", &["set_policy", "set_operator_policy"]),
    ("--apply-to", &["set_policy", "set_operator_policy"]),
    ("--online", &["list_queues"]),
    ("--offline", &["list_queues"]),
    ("--local", &["list_queues"]),
];

fn parse(argv: Vec<String>) -> Result<Opts, Fail> {
    let prog = argv
        .first()
        .map(|a| {
            std::path::Path::new(a)
                .file_name()
                .map_or_else(|| a.clone(), |n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "warrenctl".to_string());
    let mut o = Opts {
        prog,
        url: std::env::var("WARREN_URL").unwrap_or_else(|_| "http://127.0.0.1:15672".into()),
        username: "guest".into(),
        password: "guest".into(),
        vhost: "/".into(),
        quiet: false,
        headers: true,
        json: false,
        timeout: 60.0,
        timeout_given: false,
        if_empty: false,
        if_unused: false,
        global: false,
        description: None,
        vhost_tags: None,
        default_queue_type: None,
        limit_user: None,
        priority: None,
        apply_to: None,
        command: String::new(),
        args: Vec::new(),
    };
    let mut positional = Vec::new();
    let mut flags_seen: Vec<String> = Vec::new();
    let mut it = argv.into_iter().skip(1);
    let mut only_positional = false;
    while let Some(a) = it.next() {
        if only_positional || !a.starts_with('-') || a == "-" {
            positional.push(a);
            continue;
        }
        if a == "--" {
            only_positional = true;
            continue;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, Fail> {
            match inline.clone().or_else(|| it.next()) {
                Some(v) => Ok(v),
                None => Err(Fail::usage(format!("option {name} needs a value"))),
            }
        };
        match flag.as_str() {
            "--url" => o.url = value("--url")?,
            "--username" => o.username = value("--username")?,
            "--password" => o.password = value("--password")?,
            "-p" | "--vhost" => o.vhost = value("--vhost")?,
            "--formatter" => match value("--formatter")?.as_str() {
                "json" => o.json = true,
                "table" => o.json = false,
                other => {
                    return Err(Fail::usage(format!(
                        "unknown formatter \"{other}\" (warrenctl has table and json)"
                    )))
                }
            },
            "-t" | "--timeout" => {
                let v = value("--timeout")?;
                o.timeout = match v.parse::<f64>() {
                    // Duration::from_secs_f64 panics past u64 seconds: check here.
                    Ok(t) if t > 0.0 && Duration::try_from_secs_f64(t).is_ok() => t,
                    _ => {
                        return Err(Fail::usage(format!(
                            "--timeout takes a number of seconds, got \"{v}\""
                        )))
                    }
                };
                o.timeout_given = true;
            }
            // Erlang node names mean nothing over HTTP: taken and ignored, so scripts
            // written for rabbitmqctl keep working.
            "-n" | "--node" => {
                value("--node")?;
            }
            "-l" | "--longnames" => {}
            "-q" | "--quiet" => o.quiet = true,
            "-s" | "--silent" => {
                o.quiet = true;
                o.headers = false;
            }
            "--no-table-headers" => o.headers = false,
            "-e" | "--if-empty" => {
                o.if_empty = true;
                flags_seen.push("--if-empty".into());
            }
            "-u" | "--if-unused" => {
                o.if_unused = true;
                flags_seen.push("--if-unused".into());
            }
            "--description" => {
                o.description = Some(value("--description")?);
                flags_seen.push(flag.clone());
            }
            "--tags" => {
                o.vhost_tags = Some(value("--tags")?);
                flags_seen.push(flag.clone());
            }
            "--default-queue-type" => {
                o.default_queue_type = Some(value("--default-queue-type")?);
                flags_seen.push(flag.clone());
            }
            "--user" => {
                o.limit_user = Some(value("--user")?);
                flags_seen.push(flag.clone());
            }
            "--priority" => {
                o.priority = Some(value("--priority")?);
                flags_seen.push(flag.clone());
            }
            "--apply-to" => {
                o.apply_to = Some(value("--apply-to")?);
                flags_seen.push(flag.clone());
            }
            "--global" | "--online" | "--offline" | "--local" => {
                if flag == "--global" {
                    o.global = true;
                }
                flags_seen.push(flag.clone());
            }
            _ => {
                return Err(Fail::usage(format!(
                    "Invalid options for this command:\n{a}"
                )))
            }
        }
    }
    let mut positional = positional.into_iter();
    o.command = match positional.next() {
        Some(c) => c,
        None => return Err(Fail::usage("no command given")),
    };
    o.args = positional.collect();
    for f in &flags_seen {
        if let Some((_, cmds)) = COMMAND_FLAGS.iter().find(|(name, _)| name == f) {
            if !cmds.contains(&o.command.as_str()) {
                return Err(Fail::usage(format!(
                    "Invalid options for this command:\n{f}"
                )));
            }
        }
    }
    Ok(o)
}

/// Writes to stdout; a reader that went away ends the program quietly (there is
/// nobody left to tell), any other write error is EX_SOFTWARE.
pub fn emit(s: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(s.as_bytes()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("Error: cannot write the output: {e}");
        std::process::exit(i32::from(EX_SOFTWARE));
    }
}

fn usage(prog: &str) -> String {
    format!(
        "Usage\n\n{prog} [--url <url>] [--username <user>] [--password <password>] [--quiet] \
         [--no-table-headers] [--formatter json] <command> [<command options>]\n\n\
         Talks to the broker's HTTP management API (default http://127.0.0.1:15672, or \
         $WARREN_URL).\n\nCommands:\n\n{}",
        commands::COMMANDS
            .iter()
            .chain(admin::COMMANDS)
            .chain(policies::COMMANDS)
            .map(|(name, help)| format!("   {name:<30}{help}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let prog = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map_or_else(
            || "warrenctl".to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
    // Echoed on usage errors, as rabbitmqctl does, but without the password.
    let mut hide_next = false;
    let given = argv
        .iter()
        .skip(1)
        .map(|a| {
            let shown = if hide_next || a.starts_with("--password=") {
                "********".to_string()
            } else {
                a.clone()
            };
            hide_next = a == "--password";
            shown
        })
        .collect::<Vec<_>>()
        .join(" ");
    let result = parse(argv).and_then(|o| {
        if matches!(o.command.as_str(), "help" | "--help") {
            outln!("{}", usage(&o.prog));
            return Ok(());
        }
        let api = http::Api::new(
            &o.url,
            &o.username,
            &o.password,
            Duration::try_from_secs_f64(o.timeout).unwrap_or(Duration::MAX),
        )?;
        commands::run(&o, &api)
    });
    // Flush what the command printed before the error text, in order.
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // Argument errors echo the command line and the usage, as rabbitmqctl's do;
            // a 64 for a broker's answer ("Queue not found") does not.
            if f.msg.starts_with("Error (argument validation)") {
                eprintln!("{}\nArguments given:\n\t{given}\n\n{}", f.msg, usage(&prog));
            } else {
                eprintln!("{}", f.msg);
            }
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Opts, Fail> {
        let mut argv = vec!["/usr/sbin/rabbitmqctl".to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        parse(argv)
    }

    #[test]
    fn flags_go_anywhere_as_rabbitmqctl_takes_them() {
        let o = p(&[
            "-q",
            "list_queues",
            "-p",
            "v1",
            "name",
            "--no-table-headers",
            "messages",
        ])
        .expect("parses");
        assert_eq!(o.prog, "rabbitmqctl");
        assert_eq!(o.command, "list_queues");
        assert_eq!(o.args, ["name", "messages"]);
        assert_eq!(o.vhost, "v1");
        assert!(o.quiet && !o.headers && !o.json);
        let o = p(&[
            "--vhost=/x",
            "--formatter=json",
            "list_exchanges",
            "-t",
            "5",
        ])
        .expect("ok");
        assert_eq!((o.vhost.as_str(), o.json, o.timeout), ("/x", true, 5.0));
        let o = p(&["delete_queue", "--", "-odd-name", "--if-empty"]).expect("ok");
        assert_eq!(o.args, ["-odd-name", "--if-empty"]);
        assert!(!o.if_empty);
        let o = p(&["-s", "list_users"]).expect("ok");
        assert!(o.quiet && !o.headers);
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for args in [
            &[][..],
            &["list_queues", "--nope"],
            &["list_queues", "-p"],
            &["list_queues", "--if-unused"],
            &["list_queues", "--timeout", "1e300"],
            &["list_queues", "--timeout", "-1"],
            &["list_queues", "--formatter", "erlang"],
        ] {
            let e = p(args).err().unwrap_or_else(|| panic!("{args:?} parsed"));
            assert_eq!(e.code, EX_USAGE, "{args:?}");
        }
    }
}
