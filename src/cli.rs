//! The command line: `serve`, `migrate`, and `apps …`, `enrollments …`, `keys …`,
//! `token mint` and `audit list` straight against the store, through the same core the
//! server runs.

use std::{io::Read, sync::Arc, time::Duration};

use chrono::SecondsFormat;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::{
    app::{self, Server},
    authority::{
        Authority, AuthorityError, Invalid, MintRequest,
        app_secrets::{CreateSecret, CreatedSecret},
        apps::{CreateApplication, CreatedApplication, QuotaRequest, UpdateApplication},
        audit::AuditQuery,
        clock::{SharedClock, SystemClock},
        enrollments::CreateEnrollment,
    },
    config::Settings,
    domain::{
        AppId, AppSecret, Application, AuditRecord, CredentialRef, Enrollment, EnrollmentId,
        OwnerId, ScopeSet, SecretId, SecretState, Subject, SubjectKind,
    },
    store::EnrollmentFilter,
    telemetry,
};

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Turns credentials into short-lived signed tokens"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (public listener, and the admin listener when admin.token is set).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage applications (OAuth clients).
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Manage enrollments (an application installed for an owner).
    #[command(subcommand)]
    Enrollments(EnrollmentsCommand),
    /// Inspect and rotate the token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Mint tokens on the operator's word (as POST /admin/v1/tokens does).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Read the audit trail of credential events (as GET /admin/v1/audit does).
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// List credential events, newest first (issued, failed, rotated, revoked, refused…).
    List {
        #[arg(long)]
        app_id: Option<String>,
        #[arg(long)]
        secret_id: Option<String>,
        #[arg(long)]
        grant_id: Option<String>,
        /// A token subject: an app's client_id or an owner id.
        #[arg(long)]
        subject: Option<String>,
        /// An event name, such as token.issued or auth.failed.
        #[arg(long)]
        event: Option<String>,
        /// Events at or after this RFC 3339 time, e.g. 2030-01-31T00:00:00Z.
        #[arg(long)]
        since: Option<String>,
        /// Events before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// At most this many (1 to 1000, default 100).
        #[arg(long)]
        limit: Option<String>,
        /// Continue after a previous page (its next_cursor).
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        output: ListOutputArgs,
    },
}

#[derive(Debug, Clone, Copy, Args)]
struct ListOutputArgs {
    /// text for people, json for programs.
    #[arg(long, value_enum, default_value_t = ListOutput::Text)]
    output: ListOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ListOutput {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Mint a token for an owner (vouched for by your login system) or an app; prints only
    /// the token, so `TOKEN=$(portcullis token mint …)` works.
    Mint {
        /// Who the token speaks for: an owner id, or an app's client_id.
        #[arg(long)]
        sub: String,
        /// What kind of subject --sub names.
        #[arg(long, value_enum)]
        kind: Kind,
        /// Space-delimited scopes, e.g. "authGrants:read authGrants:write". For an app,
        /// its allowed scopes must cover them.
        #[arg(long, value_parser = parse_scope)]
        scope: ScopeSet,
        /// Lifetime in seconds (default: tokens.oauth_lifetime_secs; at most the longest
        /// configured token lifetime).
        #[arg(long)]
        expires_in: Option<u64>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// [`SubjectKind`] as a flag value (the domain type knows nothing of the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Owner,
    App,
}

impl From<Kind> for SubjectKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Owner => SubjectKind::Owner,
            Kind::App => SubjectKind::App,
        }
    }
}

fn parse_scope(raw: &str) -> Result<ScopeSet, String> {
    ScopeSet::parse(raw).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List keys with their state (next, current, retired).
    List,
    /// Make the published next key current and publish a new next key.
    Rotate,
}

#[derive(Debug, Subcommand)]
enum EnrollmentsCommand {
    /// Enroll an owner with an application.
    Create {
        #[arg(long)]
        app_id: String,
        #[arg(long)]
        owner_id: String,
        /// Choose the enrollment id (a UUID); generated when omitted.
        #[arg(long)]
        id: Option<String>,
        /// JSON kept with the enrollment.
        #[arg(long)]
        data: Option<String>,
        /// Space-delimited; defaults to the app's default scopes.
        #[arg(long)]
        scopes: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List enrollments, newest first.
    List {
        #[arg(long)]
        app_id: Option<String>,
        #[arg(long)]
        owner_id: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show one enrollment.
    Show {
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Refuse the enrollment's tokens and authorizations from now on.
    Disable { id: String },
    /// Accept the enrollment again.
    Enable { id: String },
    /// Delete the enrollment.
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
enum AppsCommand {
    /// Create an application; its secret is printed once.
    Create(CreateArgs),
    /// List applications.
    List(OutputArgs),
    /// Show one application.
    Show {
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Change name, scopes, sandbox flag, network binding or issuance quota.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// Space-delimited scopes.
        #[arg(long)]
        allowed_scopes: Option<String>,
        /// Space-delimited scopes.
        #[arg(long)]
        default_scopes: Option<String>,
        #[arg(long)]
        sandbox: Option<bool>,
        /// Replaces the networks the app's credentials may be presented from (repeatable;
        /// a CIDR block such as 10.0.0.0/8, or one address).
        #[arg(long = "allowed-cidr", value_name = "CIDR")]
        allowed_cidrs: Vec<String>,
        /// Lets the app's credentials be presented from anywhere again.
        #[arg(long, conflicts_with = "allowed_cidrs")]
        clear_allowed_cidrs: bool,
        /// Replaces the networks new tokens of the app may be used from (repeatable).
        #[arg(long = "token-bound-cidr", value_name = "CIDR")]
        token_bound_cidrs: Vec<String>,
        /// New tokens of the app are bound to no network again.
        #[arg(long, conflicts_with = "token_bound_cidrs")]
        clear_token_bound_cidrs: bool,
        #[command(flatten)]
        quota: QuotaArgs,
        /// Lifts the app's issuance quota.
        #[arg(long, conflicts_with_all = ["tokens_per_hour", "tokens_per_day"])]
        clear_quota: bool,
    },
    /// Refuse the application's credentials from now on.
    Disable { id: String },
    /// Accept the application's credentials again.
    Enable { id: String },
    /// Delete the application.
    Delete { id: String },
    /// Tokens issued with the application per UTC day, oldest first.
    Usage {
        id: String,
        /// How many days, today included (1 to 366).
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[command(flatten)]
        output: ListOutputArgs,
    },
    /// Manage an application's secrets: several may be live at once.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Issue a new secret (printed once); the app's other secrets keep working for the
    /// grace period.
    RotateSecret {
        id: String,
        /// Seconds the previous secret stays valid; 0 ends it at once. Default:
        /// credentials.secret_grace_secs.
        #[arg(long)]
        grace_secs: Option<u64>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Add a secret to an application; it is printed once.
    Create {
        /// The application id.
        app_id: String,
        /// What the secret is for (at most 200 characters).
        #[arg(long)]
        description: Option<String>,
        /// When it stops working: an RFC 3339 UTC timestamp such as 2030-01-31T00:00:00Z.
        #[arg(long, conflicts_with = "expires_in")]
        expires_at: Option<String>,
        /// Seconds from now until it stops working.
        #[arg(long)]
        expires_in: Option<u64>,
        /// It verifies at most this many times (counted exactly across replicas).
        #[arg(long)]
        max_uses: Option<u64>,
        /// A network the secret may be presented from (repeatable; a CIDR block such as
        /// 10.0.0.0/8, or one address), besides the application's own list.
        #[arg(long = "allowed-cidr", value_name = "CIDR")]
        allowed_cidrs: Vec<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List an application's secrets (never the secrets themselves).
    List {
        /// The application id.
        app_id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Revoke one secret; the application's others keep working.
    Revoke {
        /// The application id.
        app_id: String,
        secret_id: String,
        /// Also refuse every token the secret minted, and the auth grants created with them.
        #[arg(long)]
        revoke_tokens: bool,
    },
}

/// An issuance quota (fixed UTC windows, exact across replicas). On update, giving either
/// replaces the app's whole quota: give both to keep both.
#[derive(Debug, Args)]
struct QuotaArgs {
    /// Tokens the app may be issued per UTC hour.
    #[arg(long, value_name = "N")]
    tokens_per_hour: Option<u64>,
    /// Tokens the app may be issued per UTC day.
    #[arg(long, value_name = "N")]
    tokens_per_day: Option<u64>,
}

impl QuotaArgs {
    fn request(&self) -> Option<QuotaRequest> {
        (self.tokens_per_hour.is_some() || self.tokens_per_day.is_some()).then_some(QuotaRequest {
            tokens_per_hour: self.tokens_per_hour,
            tokens_per_day: self.tokens_per_day,
        })
    }
}

#[derive(Debug, Args)]
struct CreateArgs {
    #[arg(long)]
    name: String,
    /// Space-delimited scopes the app may request (default: its default scopes).
    #[arg(long)]
    allowed_scopes: Option<String>,
    /// Space-delimited scopes granted when none are requested (default: all:read all:write).
    #[arg(long)]
    default_scopes: Option<String>,
    #[arg(long)]
    sandbox: bool,
    /// A network the app's credentials may be presented from (repeatable; a CIDR block such
    /// as 10.0.0.0/8, or one address). Default: anywhere.
    #[arg(long = "allowed-cidr", value_name = "CIDR")]
    allowed_cidrs: Vec<String>,
    /// A network the app's tokens may be used from (repeatable). Default: anywhere.
    #[arg(long = "token-bound-cidr", value_name = "CIDR")]
    token_bound_cidrs: Vec<String>,
    #[command(flatten)]
    quota: QuotaArgs,
    /// Import an existing client_id; its secret is read from standard input.
    #[arg(long, requires = "client_secret_stdin")]
    client_id: Option<String>,
    /// Read the imported client secret from standard input (never from arguments,
    /// which other users can see).
    #[arg(long, requires = "client_id")]
    client_secret_stdin: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Clone, Copy, Args)]
struct OutputArgs {
    /// text for people, json for programs, env for `eval "$(…)"` in a shell.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
    Env,
}

/// The same core the server runs, for one command. Changes it makes are announced through
/// the store, so running servers hear of them (at once with PostgreSQL; with SQLite, when
/// their caches expire).
async fn open_core(settings: &Settings, clock: SharedClock) -> anyhow::Result<Authority> {
    let store = app::open_store(settings).await?;
    let hasher = Arc::new(app::secret_hasher(settings)?);
    app::build_authority(settings, store, clock, hasher).await
}

/// Parses arguments, loads settings and runs the command.
pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    let _log_writer = telemetry::init(settings.log.format, log_level(&cli.command, &settings))?;
    let clock: SharedClock = Arc::new(SystemClock);
    match cli.command {
        Command::Serve => {
            let server = Server::build(&settings, clock).await?;
            let lifecycle = server.lifecycle();
            let drain_delay = settings.drain_delay();
            server
                .run_until(async move {
                    if shutdown_signal().await == Signal::Terminate && !drain_delay.is_zero() {
                        // The orchestrator is taking us out of rotation: say so on
                        // readiness first, and keep serving until the gateway has noticed.
                        lifecycle.start_draining();
                        tracing::info!(
                            delay_ms = drain_delay.as_millis() as u64,
                            "SIGTERM: readiness off, serving on while the gateway notices"
                        );
                        // A second signal means "now".
                        tokio::select! {
                            () = tokio::time::sleep(drain_delay) => {}
                            _ = shutdown_signal() => {}
                        }
                    }
                })
                .await
        }
        Command::Migrate => {
            app::open_store(&settings).await?;
            println!("migrations applied");
            Ok(())
        }
        command => {
            let core = open_core(&settings, clock).await?;
            let done = match command {
                Command::Apps(command) => run_apps(command, &core, &settings).await,
                Command::Enrollments(command) => run_enrollments(command, &core).await,
                Command::Keys(command) => run_keys(command, &core).await,
                Command::Token(command) => run_token(command, &core).await,
                Command::Audit(command) => run_audit(command, &core).await,
                Command::Serve | Command::Migrate => unreachable!("handled above"),
            };
            // What the command did (a rotation, a revocation) joins the audit trail before
            // the process exits.
            if let Err(e) = core.flush_audit().await {
                tracing::warn!(error = %e, "could not write the audit trail");
            }
            done
        }
    }
}

/// The server logs at the configured level. Any other command prints its result on stdout
/// and logs only what went wrong, whatever `log.level` says (it is the server's setting, and
/// its default `info` would put audit lines between a command's output lines); `RUST_LOG`
/// still overrides both.
fn log_level<'a>(command: &Command, settings: &'a Settings) -> &'a str {
    match command {
        Command::Serve => &settings.log.level,
        _ => "warn",
    }
}

async fn run_token(command: TokenCommand, core: &Authority) -> anyhow::Result<()> {
    let TokenCommand::Mint {
        sub,
        kind,
        scope,
        expires_in,
        output,
    } = command;
    let token = core
        .mint(MintRequest {
            subject: Subject {
                kind: kind.into(),
                id: sub,
            },
            scope,
            lifetime: expires_in.map(Duration::from_secs),
        })
        .await
        .map_err(flag_error)?;
    match output.output {
        Output::Text => println!("{}", token.access_token),
        Output::Json => println!(
            "{}",
            json!({
                "access_token": token.access_token,
                "token_type": "Bearer",
                "expires_in": token.expires_in,
            })
        ),
        Output::Env => println!("TOKEN={}", token.access_token),
    }
    Ok(())
}

async fn run_keys(command: KeysCommand, core: &Authority) -> anyhow::Result<()> {
    if matches!(command, KeysCommand::Rotate) {
        let current = core.rotate_keys().await?;
        println!("rotated: {} is now current", current.kid);
    }
    for key in core.signing_keys() {
        println!(
            "{}  {:<7}  {:<7}  created {}",
            key.kid,
            key.algorithm.as_str(),
            key.state.as_str(),
            key.created_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
    }
    Ok(())
}

async fn run_enrollments(command: EnrollmentsCommand, core: &Authority) -> anyhow::Result<()> {
    let enrollment_id = |raw: &str| {
        EnrollmentId::parse(raw)
            .with_context(|| format!("'{raw}' is not an enrollment id (a UUID)"))
    };
    match command {
        EnrollmentsCommand::Create {
            app_id,
            owner_id,
            id,
            data,
            scopes,
            output,
        } => {
            let data = data
                .map(|raw| serde_json::from_str(&raw))
                .transpose()
                .context("--data must be JSON")?;
            let created = core
                .create_enrollment(CreateEnrollment {
                    app_id: Some(parse_id(&app_id)?),
                    owner_id,
                    id,
                    data,
                    scopes,
                })
                .await?;
            print_enrollment(&created.into_inner(), output.output);
        }
        EnrollmentsCommand::List {
            app_id,
            owner_id,
            output,
        } => {
            let filter = EnrollmentFilter {
                app_id: app_id.as_deref().map(parse_id).transpose()?,
                owner_id: owner_id
                    .as_deref()
                    .map(|o| OwnerId::parse(o).context("--owner-id"))
                    .transpose()?,
            };
            let list = core.enrollments(&filter).await?;
            match output.output {
                Output::Json => println!(
                    "{}",
                    json!(list.iter().map(enrollment_json).collect::<Vec<_>>())
                ),
                _ => {
                    for e in &list {
                        println!(
                            "{}  app {}  owner {}{}",
                            e.id,
                            e.app_id,
                            e.owner_id,
                            if e.disabled { "  (disabled)" } else { "" }
                        );
                    }
                }
            }
        }
        EnrollmentsCommand::Show { id, output } => {
            let e = core.enrollment(enrollment_id(&id)?).await?;
            print_enrollment(&e, output.output);
        }
        EnrollmentsCommand::Disable { id } => {
            core.set_enrollment_disabled(enrollment_id(&id)?, true)
                .await?;
            println!("disabled {id}");
        }
        EnrollmentsCommand::Enable { id } => {
            core.set_enrollment_disabled(enrollment_id(&id)?, false)
                .await?;
            println!("enabled {id}");
        }
        EnrollmentsCommand::Delete { id } => {
            core.delete_enrollment(enrollment_id(&id)?).await?;
            println!("deleted {id}");
        }
    }
    Ok(())
}

fn enrollment_json(e: &Enrollment) -> serde_json::Value {
    json!({
        "id": e.id,
        "app_id": e.app_id,
        "owner_id": e.owner_id,
        "data": e.data,
        "scopes": e.scopes.to_string(),
        "sandbox": e.sandbox,
        "disabled": e.disabled,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
        "last_used_at": e.last_used_at,
    })
}

fn print_enrollment(e: &Enrollment, output: Output) {
    match output {
        Output::Json => println!("{}", enrollment_json(e)),
        Output::Env => {
            println!("ENROLLMENT_ID={}", e.id);
            println!("OWNER_ID={}", e.owner_id);
        }
        Output::Text => {
            println!("enrollment_id: {}", e.id);
            println!("app_id:        {}", e.app_id);
            println!("owner_id:      {}", e.owner_id);
            println!("scopes:        {}", e.scopes);
            println!("disabled:      {}", e.disabled);
            println!("data:          {}", e.data);
            if let Some(at) = e.last_used_at {
                println!(
                    "last_used_at:  {}",
                    at.to_rfc3339_opts(SecondsFormat::Secs, true)
                );
            }
        }
    }
}

async fn run_apps(
    command: AppsCommand,
    core: &Authority,
    settings: &Settings,
) -> anyhow::Result<()> {
    match command {
        AppsCommand::Create(args) => {
            let import = match args.client_id {
                Some(id) => Some((id, read_secret_from_stdin()?)),
                None => None,
            };
            let created = core
                .create_app(CreateApplication {
                    name: args.name,
                    allowed_scopes: args.allowed_scopes,
                    default_scopes: args.default_scopes,
                    sandbox: args.sandbox,
                    allowed_cidrs: Some(args.allowed_cidrs),
                    token_bound_cidrs: Some(args.token_bound_cidrs),
                    quota: args.quota.request(),
                    import,
                })
                .await
                .map_err(flag_error)?;
            print_created(&created, args.output.output);
        }
        AppsCommand::List(output) => {
            let list = core.apps().await?;
            match output.output {
                Output::Json => {
                    println!("{}", json!(list.iter().map(app_json).collect::<Vec<_>>()))
                }
                _ => {
                    for app in &list {
                        println!(
                            "{}  {}  {}{}",
                            app.id,
                            app.client_id,
                            app.name,
                            if app.disabled { "  (disabled)" } else { "" }
                        );
                    }
                }
            }
        }
        AppsCommand::Show { id, output } => {
            let app = core.app(parse_id(&id)?).await?;
            print_app(&app, output.output);
        }
        AppsCommand::Update {
            id,
            name,
            allowed_scopes,
            default_scopes,
            sandbox,
            allowed_cidrs,
            clear_allowed_cidrs,
            token_bound_cidrs,
            clear_token_bound_cidrs,
            quota,
            clear_quota,
        } => {
            let app = core
                .update_app(
                    parse_id(&id)?,
                    UpdateApplication {
                        name,
                        allowed_scopes,
                        default_scopes,
                        sandbox,
                        allowed_cidrs: replacement(allowed_cidrs, clear_allowed_cidrs),
                        token_bound_cidrs: replacement(token_bound_cidrs, clear_token_bound_cidrs),
                        quota: match quota.request() {
                            Some(q) => Some(Some(q)),
                            None => clear_quota.then_some(None),
                        },
                    },
                )
                .await
                .map_err(flag_error)?;
            print_app(&app, Output::Text);
        }
        AppsCommand::Disable { id } => {
            core.set_app_disabled(parse_id(&id)?, true).await?;
            println!("disabled {id}");
        }
        AppsCommand::Enable { id } => {
            core.set_app_disabled(parse_id(&id)?, false).await?;
            println!("enabled {id}");
        }
        AppsCommand::Delete { id } => {
            core.delete_app(parse_id(&id)?).await?;
            println!("deleted {id}");
        }
        AppsCommand::RotateSecret {
            id,
            grace_secs,
            output,
        } => {
            let grace = grace_secs.unwrap_or(settings.credentials.secret_grace_secs);
            let rotated = core
                .rotate_app_secret(parse_id(&id)?, Duration::from_secs(grace))
                .await?;
            print_created(&rotated, output.output);
        }
        AppsCommand::Secrets(command) => run_secrets(core, command).await?,
        AppsCommand::Usage { id, days, output } => {
            let days = core
                .usage(CredentialRef::App(parse_id(&id)?), Some(days))
                .await
                .map_err(flag_error)?;
            match output.output {
                ListOutput::Json => println!(
                    "{}",
                    json!({
                        "kind": "app",
                        "id": id,
                        "days": days
                            .iter()
                            .map(|(day, issued)| json!({"day": day.to_string(), "issued": issued}))
                            .collect::<Vec<_>>(),
                    })
                ),
                ListOutput::Text => {
                    for (day, issued) in days {
                        println!("{day}  {issued}");
                    }
                }
            }
        }
    }
    Ok(())
}

async fn run_secrets(core: &Authority, command: SecretsCommand) -> anyhow::Result<()> {
    match command {
        SecretsCommand::Create {
            app_id,
            description,
            expires_at,
            expires_in,
            max_uses,
            allowed_cidrs,
            output,
        } => {
            let created = core
                .create_app_secret(
                    parse_id(&app_id)?,
                    CreateSecret {
                        description,
                        expires_at,
                        expires_in,
                        max_uses,
                        allowed_cidrs: Some(allowed_cidrs),
                    },
                )
                .await
                .map_err(flag_error)?;
            print_created_secret(&created, output.output);
        }
        SecretsCommand::List { app_id, output } => {
            let list = core.app_secrets(parse_id(&app_id)?).await?;
            match output.output {
                Output::Json => println!(
                    "{}",
                    json!(
                        list.iter()
                            .map(|(s, state)| secret_json(s, *state))
                            .collect::<Vec<_>>()
                    )
                ),
                _ => {
                    for (s, state) in &list {
                        let uses = match s.max_uses {
                            Some(max) => format!("{}/{max} uses", s.use_count),
                            None => format!("{} uses", s.use_count),
                        };
                        let expires = s.expires_at.map_or("never".to_owned(), |t| {
                            t.to_rfc3339_opts(SecondsFormat::Secs, true)
                        });
                        let from = if s.allowed_cidrs.is_empty() {
                            String::new()
                        } else {
                            format!("  from {}", s.allowed_cidrs)
                        };
                        let line = format!(
                            "{}  {:<12}  {:<8}  expires {expires}  {uses}{from}  {}",
                            s.id,
                            s.prefix.as_deref().unwrap_or("-"),
                            state.as_str(),
                            s.description
                        );
                        println!("{}", line.trim_end());
                    }
                }
            }
        }
        SecretsCommand::Revoke {
            app_id,
            secret_id,
            revoke_tokens,
        } => {
            let id = SecretId::parse(&secret_id)
                .with_context(|| format!("'{secret_id}' is not a secret id (a UUID)"))?;
            let revoked = core
                .revoke_app_secret(parse_id(&app_id)?, id, revoke_tokens)
                .await?;
            if revoked.tokens_revoked {
                println!(
                    "revoked {secret_id}, its tokens and {} auth grant(s) created with them",
                    revoked.grants_revoked
                );
            } else {
                println!("revoked {secret_id}");
            }
        }
    }
    Ok(())
}

/// A list flag of `apps update`: given, it replaces the list; `--clear-…` empties it.
fn replacement(given: Vec<String>, clear: bool) -> Option<Vec<String>> {
    (clear || !given.is_empty()).then_some(given)
}

/// The core names the admin API's fields; here they are flags.
async fn run_audit(command: AuditCommand, core: &Authority) -> anyhow::Result<()> {
    let AuditCommand::List {
        app_id,
        secret_id,
        grant_id,
        subject,
        event,
        since,
        until,
        limit,
        cursor,
        output,
    } = command;
    let page = core
        .audit_events(&AuditQuery {
            app_id,
            secret_id,
            grant_id,
            subject,
            event,
            since,
            until,
            limit,
            cursor,
        })
        .await
        .map_err(flag_error)?;
    match output.output {
        ListOutput::Json => println!(
            "{}",
            json!({
                "events": page.events.iter().map(audit_json).collect::<Vec<_>>(),
                "next_cursor": page.next_cursor,
            })
        ),
        ListOutput::Text => {
            for e in &page.events {
                let mut line = format!(
                    "{}  {:<22}",
                    e.at.to_rfc3339_opts(SecondsFormat::Millis, true),
                    e.event
                );
                let ids = [
                    ("app", e.app_id.map(|id| id.to_string())),
                    ("secret", e.secret_id.map(|id| id.to_string())),
                    ("grant", e.grant_id.map(|id| id.to_string())),
                    ("enrollment", e.enrollment_id.map(|id| id.to_string())),
                    ("subject", e.subject.clone()),
                    ("client", e.client_id.clone()),
                    ("jti", e.jti.clone()),
                    ("ip", e.source_ip.clone()),
                    ("reason", e.reason.clone()),
                ];
                for (name, value) in ids {
                    if let Some(value) = value {
                        line.push_str(&format!("  {name}={value}"));
                    }
                }
                println!("{line}");
            }
            if let Some(cursor) = page.next_cursor {
                println!("more: --cursor {cursor}");
            }
        }
    }
    Ok(())
}

fn audit_json(e: &AuditRecord) -> serde_json::Value {
    json!({
        "id": e.id,
        "at": e.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "event": e.event,
        "app_id": e.app_id,
        "secret_id": e.secret_id,
        "grant_id": e.grant_id.map(|id| id.to_string()),
        "enrollment_id": e.enrollment_id,
        "sub_kind": e.subject_kind,
        "subject": e.subject,
        "client_id": e.client_id,
        "jti": e.jti,
        "source_ip": e.source_ip,
        "reason": e.reason,
        "detail": e.detail,
    })
}

fn flag_error(e: AuthorityError) -> anyhow::Error {
    match e {
        AuthorityError::Invalid(Invalid { field, rule }) => {
            let flag = match field {
                "allowed_cidrs" => "allowed-cidr".to_owned(),
                "token_bound_cidrs" => "token-bound-cidr".to_owned(),
                "quota" => "tokens-per-hour/--tokens-per-day".to_owned(),
                field => field.trim_start_matches("quota.").replace('_', "-"),
            };
            anyhow::anyhow!("--{flag}: {rule}")
        }
        e => e.into(),
    }
}

fn secret_json(s: &AppSecret, state: SecretState) -> serde_json::Value {
    let mut value = json!({
        "id": s.id,
        "app_id": s.app_id,
        "prefix": s.prefix,
        "description": s.description,
        "status": state.as_str(),
        "created_at": s.created_at,
        "expires_at": s.expires_at,
        "last_used_at": s.last_used_at,
        "use_count": s.use_count,
        "max_uses": s.max_uses,
    });
    if !s.allowed_cidrs.is_empty() {
        value["allowed_cidrs"] = json!(s.allowed_cidrs.to_strings());
    }
    value
}

fn print_created_secret(created: &CreatedSecret, output: Output) {
    let secret = created.client_secret.expose_secret();
    let s = &created.secret;
    match output {
        Output::Json => {
            let mut value = secret_json(s, SecretState::Active);
            value["client_secret"] = json!(secret);
            println!("{value}");
        }
        Output::Env => {
            println!("SECRET_ID={}", s.id);
            println!("CLIENT_SECRET={secret}");
        }
        Output::Text => {
            println!("secret_id:      {}", s.id);
            println!("app_id:         {}", s.app_id);
            if !s.description.is_empty() {
                println!("description:    {}", s.description);
            }
            if let Some(at) = s.expires_at {
                println!(
                    "expires_at:     {}",
                    at.to_rfc3339_opts(SecondsFormat::Secs, true)
                );
            }
            if let Some(max) = s.max_uses {
                println!("max_uses:       {max}");
            }
            if !s.allowed_cidrs.is_empty() {
                println!("allowed_cidrs:  {}", s.allowed_cidrs);
            }
            println!("client_secret:  {secret}");
            println!();
            println!("The secret is shown only this once; store it now.");
        }
    }
}

fn parse_id(raw: &str) -> anyhow::Result<AppId> {
    AppId::parse(raw).with_context(|| format!("'{raw}' is not an application id (a UUID)"))
}

fn read_secret_from_stdin() -> anyhow::Result<SecretString> {
    let mut secret = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut secret)
        .context("reading the client secret from standard input")?;
    Ok(secret.trim_end_matches(['\r', '\n']).to_owned().into())
}

fn app_json(app: &Application) -> serde_json::Value {
    let mut value = json!({
        "id": app.id,
        "client_id": app.client_id,
        "name": app.name,
        "allowed_scopes": app.allowed_scopes.to_string(),
        "default_scopes": app.default_scopes.to_string(),
        "sandbox": app.sandbox,
        "disabled": app.disabled,
        "created_at": app.created_at,
        "updated_at": app.updated_at,
        "last_used_at": app.last_used_at,
    });
    // As the admin API shows them: only when set.
    if !app.allowed_cidrs.is_empty() {
        value["allowed_cidrs"] = json!(app.allowed_cidrs.to_strings());
    }
    if !app.token_bound_cidrs.is_empty() {
        value["token_bound_cidrs"] = json!(app.token_bound_cidrs.to_strings());
    }
    if !app.quota.is_unlimited() {
        value["quota"] = json!({
            "tokens_per_hour": app.quota.per_hour,
            "tokens_per_day": app.quota.per_day,
        });
    }
    value
}

fn print_app(app: &Application, output: Output) {
    match output {
        Output::Json => println!("{}", app_json(app)),
        Output::Env => {
            println!("APP_ID={}", app.id);
            println!("CLIENT_ID={}", app.client_id);
        }
        Output::Text => {
            println!("app_id:         {}", app.id);
            println!("client_id:      {}", app.client_id);
            println!("name:           {}", app.name);
            println!("allowed_scopes: {}", app.allowed_scopes);
            println!("default_scopes: {}", app.default_scopes);
            println!("sandbox:        {}", app.sandbox);
            if !app.allowed_cidrs.is_empty() {
                println!("allowed_cidrs:  {}", app.allowed_cidrs);
            }
            if !app.token_bound_cidrs.is_empty() {
                println!("token_bound_cidrs: {}", app.token_bound_cidrs);
            }
            if let Some(n) = app.quota.per_hour {
                println!("tokens_per_hour: {n}");
            }
            if let Some(n) = app.quota.per_day {
                println!("tokens_per_day: {n}");
            }
            println!("disabled:       {}", app.disabled);
            if let Some(at) = app.last_used_at {
                println!(
                    "last_used_at:   {}",
                    at.to_rfc3339_opts(SecondsFormat::Secs, true)
                );
            }
        }
    }
}

fn print_created(created: &CreatedApplication, output: Output) {
    let secret = created.client_secret.as_ref().map(|s| s.expose_secret());
    match output {
        Output::Json => {
            let mut value = app_json(&created.app);
            if let Some(secret) = secret {
                value["client_secret"] = json!(secret);
            }
            println!("{value}");
        }
        Output::Env => {
            print_app(&created.app, Output::Env);
            if let Some(secret) = secret {
                println!("CLIENT_SECRET={secret}");
            }
        }
        Output::Text => {
            print_app(&created.app, Output::Text);
            if let Some(secret) = secret {
                println!("client_secret:  {secret}");
                println!();
                println!("The secret is shown only this once; store it now.");
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Interrupt,
    Terminate,
}

async fn shutdown_signal() -> Signal {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => Signal::Interrupt,
        () = terminate => Signal::Terminate,
    }
}
