//! CLI entry: parse, set up logging, dispatch.

use sessionfs::cli::{self, Command};
use sessionfs::run;

fn main() {
    // fuser repeats our lifecycle lines and warns that an unmount already done by `umount`
    // "failed"; its errors still show. RUST_LOG overrides all of this.
    let default_filter = "info,fuser=warn,fuser::mnt=error";
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
        .init();
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(message) => {
            eprintln!("sessionfs: {message}");
            std::process::exit(2);
        }
    };
    let result = match cli.command {
        Command::Mount(args) => run::mount(args),
        Command::Serve(args) => run::serve(args),
        Command::Unmount { mountpoint } => run::unmount(&mountpoint),
    };
    if let Err(message) = result {
        eprintln!("sessionfs: {message}");
        std::process::exit(1);
    }
}
