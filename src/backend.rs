//! The backend registry: the one place that knows which client and which emulator serve each
//! remote API.
//!
//! The client side (`remote`) and the emulators (`emulator`) know nothing of each other; this
//! module joins them. Each [`Backend`] has one [`BackendSpec`], built in one `match`
//! ([`Backend::spec`]), so adding an API means writing its client and its emulator and adding
//! one arm there.

use std::io;
use std::sync::Arc;

use crate::emulator::{self, EmulatorConfig};
use crate::remote::{self, Remote, RemoteConfig, RemoteResult};

/// Which remote API a mount or an emulator speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Backend {
    /// Mix sessions and session files.
    Mix,
    /// Lightfield files: flat, id-keyed, presigned uploads, no delete.
    Lightfield,
    /// Appmixer files: flat, id-keyed, chunked multipart uploads, JWT sign-in.
    Appmixer,
    /// Fluxer channels: guilds and channels as directories, attachments as files.
    Fluxer,
}

/// What the registry holds for one backend.
pub struct BackendSpec {
    /// Lower-case name, as on the command line (`--backend mix`) and in paths and log lines.
    pub name: &'static str,
    /// Builds the client for a server of this API.
    pub connect: fn(&RemoteConfig) -> RemoteResult<Arc<dyn Remote>>,
    /// Builds the emulator's router (without the fault layer) over `config.data_dir`.
    pub emulator: fn(&EmulatorConfig) -> io::Result<axum::Router>,
    /// Gives the embedded emulator and its client the same fresh credentials, for APIs with
    /// auth; credentials the user gave (a `--token`) are kept.
    pub embed: fn(&mut EmulatorConfig, &mut RemoteConfig),
}

impl Backend {
    /// The registry entry of this backend: the one `match` a new backend adds an arm to.
    pub fn spec(self) -> BackendSpec {
        match self {
            Backend::Mix => BackendSpec {
                name: "mix",
                connect: |config| Ok(Arc::new(remote::mix::MixRemote::new(config)?)),
                emulator: |config| {
                    Ok(emulator::mix::router(emulator::mix::MixState::open(
                        config,
                    )?))
                },
                embed: |_, _| {},
            },
            Backend::Lightfield => BackendSpec {
                name: "lightfield",
                connect: |config| Ok(Arc::new(remote::lightfield::LightfieldRemote::new(config)?)),
                emulator: |config| {
                    Ok(emulator::lightfield::router(
                        emulator::lightfield::LightfieldState::open(config)?,
                    ))
                },
                embed: |emulator, client| {
                    let token = client
                        .token
                        .get_or_insert_with(|| format!("sk_lf_{}", uuid::Uuid::new_v4().simple()));
                    emulator.token = Some(token.clone());
                },
            },
            Backend::Appmixer => BackendSpec {
                name: "appmixer",
                connect: |config| Ok(Arc::new(remote::appmixer::AppmixerRemote::new(config)?)),
                emulator: |config| {
                    Ok(emulator::appmixer::router(
                        emulator::appmixer::AppmixerState::open(config)?,
                    ))
                },
                embed: |emulator, client| {
                    if emulator.users.is_empty() {
                        // An account the client was given is the emulator's; else a fresh one.
                        let login = match (&client.user, &client.password) {
                            (Some(email), Some(password)) => emulator::appmixer::Login {
                                email: email.clone(),
                                password: password.clone(),
                            },
                            _ => emulator::appmixer::Login::generate(),
                        };
                        emulator.users.push(login);
                    }
                    // The client signs in as the first account unless it was given one.
                    if client.user.is_none() && client.password.is_none() {
                        let login = &emulator.users[0];
                        client.user = Some(login.email.clone());
                        client.password = Some(login.password.clone());
                    }
                },
            },
            Backend::Fluxer => BackendSpec {
                name: "fluxer",
                connect: |config| Ok(Arc::new(remote::fluxer::FluxerRemote::new(config)?)),
                emulator: |config| {
                    Ok(emulator::fluxer::router(
                        emulator::fluxer::FluxerState::open(config)?,
                    ))
                },
                embed: |emulator, client| {
                    let token = client
                        .token
                        .get_or_insert_with(emulator::fluxer::generate_token);
                    emulator.token = Some(token.clone());
                },
            },
        }
    }

    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Builds the client for a server of this API at `config.endpoint`.
    pub fn connect(self, config: &RemoteConfig) -> RemoteResult<Arc<dyn Remote>> {
        (self.spec().connect)(config)
    }

    /// The emulator's router over `config.data_dir`, inside the fault and network-simulation
    /// layer `config` asks for.
    pub fn emulator_router(self, config: &EmulatorConfig) -> io::Result<axum::Router> {
        Ok(emulator::with_faults(
            (self.spec().emulator)(config)?,
            config,
        ))
    }

    /// Serves this API's emulator on `config.listen` (on the current tokio runtime) until the
    /// handle is shut down or dropped.
    pub async fn spawn_emulator(
        self,
        config: EmulatorConfig,
    ) -> io::Result<emulator::RunningEmulator> {
        let app = self.emulator_router(&config)?;
        emulator::serve(app, &config).await
    }

    /// Shares fresh credentials between an embedded emulator and its client.
    pub fn embed(self, emulator: &mut EmulatorConfig, client: &mut RemoteConfig) {
        (self.spec().embed)(emulator, client)
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
