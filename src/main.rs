//! CLI entry: parse, set up logging, dispatch.

use sessionfs::cli::{self, Command, ConfigCommand};
use sessionfs::{run, status};

/// Exit code of `unmount` when it unmounted but files could not be uploaded (documented in
/// `sessionfs unmount --help`).
const UNMOUNTED_WITH_PENDING: i32 = 3;

fn main() {
    let mut argv = std::env::args_os();
    let name = argv.next().map(std::path::PathBuf::from);
    let name = name.as_deref().and_then(std::path::Path::file_name);
    if name.is_some_and(|name| run::HELPER_NAMES.iter().any(|helper| name == *helper))
        && let Err(message) = run::mount_helper(&argv.collect::<Vec<_>>())
    {
        eprintln!("{message}");
        std::process::exit(1);
    }
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(message) => {
            eprintln!("sessionfs: {message}");
            std::process::exit(2);
        }
    };
    // fuser repeats our lifecycle lines and warns that an unmount already done by `umount`
    // "failed"; its errors still show. RUST_LOG overrides all of this.
    let default_filter = "info,fuser=warn,fuser::mnt=error";
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter));
    if let Command::Mount(args) = &cli.command
        && let Some(path) = &args.log_file
    {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => {
                logger.target(env_logger::Target::Pipe(Box::new(file)));
            }
            Err(err) => {
                eprintln!(
                    "sessionfs: cannot open the log file {}: {err}",
                    path.display()
                );
                std::process::exit(2);
            }
        }
    }
    logger.init();
    let result = match cli.command {
        Command::Mount(args) => run::mount(*args),
        Command::Serve(args) => run::serve(*args),
        Command::Unmount {
            mountpoint,
            timeout,
        } => match status::client::unmount(&mountpoint, timeout) {
            Ok(0) => Ok(()),
            Ok(kept) => {
                eprintln!(
                    "sessionfs: unmounted {}; {kept} file(s) stay pending and the next mount of \
                     this remote uploads them",
                    mountpoint.display()
                );
                std::process::exit(UNMOUNTED_WITH_PENDING);
            }
            Err(message) => Err(message),
        },
        Command::Status { mountpoint, json } => status::client::status(mountpoint.as_deref(), json),
        Command::Remotes { config } => run::remotes(config.as_deref()),
        Command::Config(ConfigCommand::Check { config }) => run::check_config(config.as_deref()),
        Command::Completions { shell } => {
            std::io::Write::write_all(&mut std::io::stdout(), &cli::completions(shell)).or_else(
                |err| match err.kind() {
                    std::io::ErrorKind::BrokenPipe => Ok(()),
                    _ => Err(format!("cannot write the completions: {err}")),
                },
            )
        }
        Command::Man { dir } => cli::write_man_pages(&dir)
            .map(|()| println!("wrote the man pages into {}", dir.display()))
            .map_err(|err| format!("cannot write the man pages into {}: {err}", dir.display())),
    };
    if let Err(message) = result {
        eprintln!("sessionfs: {message}");
        std::process::exit(1);
    }
}
