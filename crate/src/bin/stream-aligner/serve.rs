//! `stream-aligner serve`: our engine as an OpenAI-compatible server, or, with `--upstream`,
//! the aligning gateway in front of any OpenAI-compatible upstream.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use stream_aligner::gateway::{self, Gateway, GatewayConfig};
use stream_aligner::serve::{self, ServerState};
use stream_aligner::upstream::{Api, RemoteConfig, RemoteOptions};

use crate::{AdapterArgs, ModelArgs};

/// Where the upstream's key is read from: never a flag (shell history, process lists, logs).
const UPSTREAM_KEY_ENV: &str = "STREAM_ALIGNER_API_KEY";

#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// The model name the API reports (default: our model's, or the upstream's as a gateway)
    #[arg(long)]
    name: Option<String>,
    /// Serve as the aligning gateway in front of this OpenAI-compatible base URL (e.g.
    /// https://api.example.com/v1); its key comes from $STREAM_ALIGNER_API_KEY
    #[arg(long)]
    upstream: Option<String>,
    /// The model name sent to the upstream
    #[arg(long, default_value = "default")]
    upstream_model: String,
    /// chat (/v1/chat/completions) or completions (/v1/completions, with our model's chat template)
    #[arg(long, default_value = "chat")]
    upstream_api: Api,
    /// Seconds to wait for the upstream's headers or its next streamed event
    #[arg(long, default_value_t = 60)]
    upstream_timeout: u64,
    /// One request per sentence, as in the paper, instead of keeping the stream open across copies
    #[arg(long)]
    sequential: bool,
    /// File of gateway keys clients must present as bearer tokens (one a line, # comments)
    #[arg(long)]
    api_keys: Option<PathBuf>,
    /// An origin allowed to call the gateway from a browser (repeatable; * for any); CORS is off without it
    #[arg(long)]
    cors_origin: Vec<String>,
    /// Answers aligned at once; more requests get 429 with Retry-After
    #[arg(long, default_value_t = 32)]
    max_active: usize,
    /// Largest request body, in bytes
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Correction rounds per answer; after them the upstream finishes uncorrected
    #[arg(long)]
    max_rounds: Option<usize>,
    #[arg(long, default_value_t = 64)]
    max_sentences: usize,
    /// Decode the aligner without the calculator
    #[arg(long)]
    no_calculator: bool,
    /// Sentences drawn again from the upstream (one request each, sampled) for a step whose
    /// correction does not hold up, as `align --resample`
    #[arg(long, default_value_t = 0)]
    resample: u16,
    /// The upstream's temperature in those draws
    #[arg(long, default_value_t = 0.4)]
    sample_temperature: f32,
    #[command(flatten)]
    adapter: AdapterArgs,
}

fn read_keys(path: &PathBuf) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the gateway keys {}", path.display()))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    anyhow::ensure!(!keys.is_empty(), "{} holds no keys", path.display());
    Ok(keys)
}

pub fn run(args: ServeArgs) -> Result<()> {
    let engine = args.model.load()?;
    let rt = tokio::runtime::Runtime::new()?;
    let Some(url) = &args.upstream else {
        let name = args.name.as_deref().unwrap_or("smollm2-135m-instruct");
        return rt.block_on(async {
            let bound = serve::spawn(ServerState::new(Arc::new(engine), name), &args.addr).await?;
            eprintln!("serving {name} on http://{bound}/v1 (Ctrl-C stops)");
            tokio::signal::ctrl_c().await?;
            anyhow::Ok(())
        });
    };
    let options = RemoteOptions {
        base_url: url.clone(),
        model: Some(args.upstream_model.clone()),
        api_key: std::env::var(UPSTREAM_KEY_ENV).ok(),
        api: Some(args.upstream_api),
        timeout_ms: Some(args.upstream_timeout.saturating_mul(1000)),
        ..RemoteOptions::default()
    };
    let mut upstream = RemoteConfig::from_options(options, engine.template.clone());
    upstream.optimistic = !args.sequential;
    let mut config = GatewayConfig::new(upstream);
    if let Some(name) = &args.name {
        config.model_name = name.clone();
    }
    if let Some(path) = &args.api_keys {
        config.api_keys = read_keys(path)?;
    }
    config.cors_origins = args.cors_origin.clone();
    config.max_active = args.max_active.max(1);
    config.max_body_bytes = args.max_body_bytes;
    config.max_rounds = args.max_rounds.unwrap_or(usize::MAX);
    config.max_sentences = args.max_sentences;
    config.calculator = !args.no_calculator;
    config.resample = args.resample.into();
    anyhow::ensure!(
        args.sample_temperature.is_finite() && args.sample_temperature > 0.0,
        "--sample-temperature must be above 0"
    );
    config.sample_temperature = args.sample_temperature;
    let aligner = Arc::new(args.adapter.apply(&engine)?);
    rt.block_on(async {
        let bound = gateway::spawn(Gateway::new(aligner, config), &args.addr).await?;
        eprintln!(
            "aligning gateway on http://{bound}/v1 in front of {url} ({}; Ctrl-C stops)",
            if args.sequential {
                "one request per sentence"
            } else {
                "optimistic streaming"
            }
        );
        tokio::signal::ctrl_c().await?;
        anyhow::Ok(())
    })
}
