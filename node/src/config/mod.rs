//! The node's TOML configuration (DESIGN §9): the serde form, its validation, and environment
//! overrides. Validation collects every problem with its key path, so `avsnode check-config` and
//! start-up report them all at once.

mod avs;
mod chain;
mod defaults;
mod docker;
mod intake;
mod ledger;
mod management;
mod metrics;
mod node;
mod parsed;
mod performer;

pub use avs::{AggregatorConfig, Aggregators, AvsConfig, OperatorSetConfig};
pub use avsnode_listener::TlsConfig;
pub use chain::{ChainConfig, RpcUrl};
pub use docker::DockerConfig;
pub use intake::IntakeConfig;
pub use ledger::{Backend, LedgerConfig};
pub use management::ManagementConfig;
pub use metrics::MetricsConfig;
pub use node::NodeConfig;
pub use parsed::Parsed;
pub use performer::{DockerPerformerConfig, PerformerConfig, RegistryAuthConfig, ResourcesConfig};

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use avsnode_signer::messages::Address;
pub use avsnode_signing::Problem;
use avsnode_signing::SignerDefinition;
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this node is and where it keeps its state.
    pub node: NodeConfig,
    /// The task intake listener (ExecutorService, TaskStream, health, reflection).
    #[serde(default)]
    pub intake: IntakeConfig,
    /// The sign-once ledger.
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// The metrics and health listener.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Where aggregator keys and operator-set membership are read from chain. Absent: nothing
    /// is read from chain.
    #[serde(default)]
    pub chain: Option<ChainConfig>,
    /// The management API (performer deploys). Absent: not served.
    #[serde(default)]
    pub management: Option<ManagementConfig>,
    /// How docker performers are run (network, log forwarding).
    #[serde(default)]
    pub docker: DockerConfig,
    /// Signing keys, referred to by name from operator sets (`[[signer]]` tables).
    #[serde(default, rename = "signer")]
    pub signers: Vec<SignerDefinition>,
    /// The AVSs this node serves (`[[avs]]` tables).
    #[serde(default)]
    pub avs: Vec<AvsConfig>,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (toml names the key and line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the key and shows the line.
        message: String,
    },
    /// The file parsed but is not a usable configuration.
    #[error("{} problem(s) in {}:\n{}", problems.len(), path.display(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

impl Config {
    /// Every configured ECDSA verifier version string: what a migration of an older ledger tries
    /// first (`avsnode_ledger::MigrationOptions`).
    pub fn verifier_versions(&self) -> Vec<String> {
        self.avs
            .iter()
            .flat_map(|a| &a.operator_sets)
            .filter_map(|set| set.verifier_version.clone())
            .collect()
    }

    /// Reads, applies environment overrides, resolves relative paths against the file's folder,
    /// and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path, |name| std::env::var(name).ok())
    }

    /// As [`Config::load`], from text, with `env` looking up environment overrides.
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut problems = config.apply_env(&env);
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        problems.extend(config.decode_aggregator_keys());
        problems.extend(config.problems());
        if problems.is_empty() {
            return Ok(config);
        }
        Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(v) = env("AVSNODE_OPERATOR_ADDRESS") {
            self.node.operator_address = Parsed::new(v);
        }
        if let Some(v) = env("AVSNODE_DATA_DIR") {
            self.node.data_dir = v.into();
        }
        if let Some(v) = env("AVSNODE_METRICS_LISTEN") {
            match v.parse() {
                Ok(addr) => self.metrics.listen = addr,
                Err(e) => problems.push(Problem {
                    path: "AVSNODE_METRICS_LISTEN".into(),
                    message: format!("invalid socket address {v:?}: {e}"),
                }),
            }
        }
        if let Some(v) = env("AVSNODE_MANAGEMENT_LISTEN") {
            match (v.parse(), &mut self.management) {
                (Ok(addr), Some(management)) => management.listen = addr,
                (Ok(_), None) => problems.push(Problem {
                    path: "AVSNODE_MANAGEMENT_LISTEN".into(),
                    message: "set, but the file has no [management] section".into(),
                }),
                (Err(e), _) => problems.push(Problem {
                    path: "AVSNODE_MANAGEMENT_LISTEN".into(),
                    message: format!("invalid socket address {v:?}: {e}"),
                }),
            }
        }
        if let Some(v) = env("AVSNODE_INTAKE_LISTEN") {
            match v.parse() {
                Ok(addr) => self.intake.listen = addr,
                Err(e) => problems.push(Problem {
                    path: "AVSNODE_INTAKE_LISTEN".into(),
                    message: format!("invalid socket address {v:?}: {e}"),
                }),
            }
        }
        for signer in &mut self.signers {
            signer.apply_env(&env);
        }
        problems
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            // Empty: missing, reported as such (not the configuration's folder).
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.node.data_dir);
        if let Some(postgres) = &mut self.ledger.postgres {
            postgres.resolve_paths(resolve);
        }
        let tls = self
            .intake
            .tls
            .iter_mut()
            .chain(self.management.iter_mut().filter_map(|m| m.tls.as_mut()));
        for tls in tls {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
            if let Some(ca) = &mut tls.client_ca {
                resolve(ca);
            }
        }
        for signer in &mut self.signers {
            signer.resolve_paths(base);
        }
        for avs in &mut self.avs {
            match &mut avs.performer {
                // A bare program name is looked up on PATH, like a shell would.
                PerformerConfig::Process { command, .. } if command.components().count() > 1 => {
                    resolve(command);
                }
                PerformerConfig::Docker(docker) => {
                    if let Some(auth) = &mut docker.registry_auth {
                        resolve(&mut auth.password_file);
                    }
                }
                _ => {}
            }
        }
    }

    /// Every problem with this configuration (empty when it is usable), each section's from
    /// its own module, in the order of the file.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut problem = |path: String, message: String| out.push(Problem { path, message });
        self.node_problems(&mut problem);
        self.intake_problems(&mut problem);
        self.ledger_problems(&mut problem);
        self.chain_problems(&mut problem);
        self.management_problems(&mut problem);
        let mut names = HashSet::new();
        for (i, signer) in self.signers.iter().enumerate() {
            for p in signer.problems(&format!("signer[{i}]")) {
                problem(p.path, p.message);
            }
            if !names.insert(signer.name.as_str()) {
                problem(
                    format!("signer[{i}].name"),
                    format!("duplicate signer name {:?}", signer.name),
                );
            }
        }
        self.avs_problems(&mut problem);
        self.docker_problems(&mut problem);
        out
    }

    /// This node's id on the Docker host (`node.id`, default the operator address).
    pub fn node_id(&self) -> String {
        self.node
            .id
            .clone()
            .unwrap_or_else(|| self.operator().to_string())
    }

    /// The docker network for performers (`docker.network`, default `avsnode-<node id>`).
    pub fn docker_network(&self) -> String {
        self.docker
            .network
            .clone()
            .unwrap_or_else(|| format!("avsnode-{}", self.node_id()))
    }

    /// The operator address.
    pub fn operator(&self) -> Address {
        *self.node.operator_address.get()
    }

    /// A few lines for `check-config`: listeners, signers, AVSs and operator sets.
    pub fn summary(&self) -> String {
        let tls = |t: &Option<TlsConfig>| match t {
            None => "plaintext",
            Some(t) if t.client_ca.is_some() => "mutual TLS",
            Some(_) => "TLS",
        };
        let mut s = format!(
            "operator {}\ndata dir {}\nintake listens on {} ({})\nmetrics listen on {}\n",
            self.operator(),
            self.node.data_dir.display(),
            self.intake.listen,
            tls(&self.intake.tls),
            self.metrics.listen
        );
        match &self.management {
            Some(m) => {
                s += &format!(
                    "management listens on {} ({}, {})\n",
                    m.listen,
                    tls(&m.tls),
                    if m.require_auth {
                        format!("{} admin key(s)", m.admins.len())
                    } else {
                        "UNAUTHENTICATED".into()
                    }
                )
            }
            None => s += "management API off (no [management] section)\n",
        }
        match &self.chain {
            Some(chain) => {
                s += &format!(
                    "chain {}: {} RPC endpoint(s), AllocationManager {}, KeyRegistrar {}\n",
                    chain.chain_id,
                    chain.rpc_urls.len(),
                    chain.allocation_manager.get(),
                    chain.key_registrar.get()
                )
            }
            None => s += "chain: not read (no [chain] section)\n",
        }
        for signer in &self.signers {
            s += &format!(
                "signer {:?}: {} from {}\n",
                signer.name,
                signer.scheme,
                signer.location()
            );
        }
        for avs in &self.avs {
            let sets: Vec<String> = avs
                .operator_sets
                .iter()
                .map(|o| format!("{} ({})", o.id, o.signer))
                .collect();
            // What an operator compares with the verifier's domainSeparator() on chain.
            for set in &avs.operator_sets {
                if let Some(verifier) = set.ecdsa_verifier()
                    && let (Ok(version), Ok(domain)) =
                        (verifier.eip712_version(), verifier.domain_separator())
                {
                    s += &format!(
                        "avs {} operator set {}: ecdsa verifier {} version {:?} (EIP-712 version \
                         {version:?}), domain separator 0x{}\n",
                        avs.address.get(),
                        set.id,
                        verifier.address,
                        verifier.version,
                        hex::encode(domain)
                    );
                }
            }
            let runtime = match &avs.performer {
                PerformerConfig::Process { command, .. } => {
                    format!("process {}", command.display())
                }
                PerformerConfig::Remote { endpoint } => format!("remote {endpoint}"),
                PerformerConfig::Docker(docker) => match &docker.image {
                    Some(image) => format!("docker {image}"),
                    None => "docker (deployed through the management API)".into(),
                },
            };
            let aggregators = match &avs.aggregators {
                Aggregators::Static(list) => format!("{} aggregator(s)", list.len()),
                Aggregators::FromChain => "aggregators from chain".into(),
            };
            s += &format!(
                "avs {}: operator sets {}; {aggregators}; performer {runtime}\n",
                avs.address.get(),
                sets.join(", "),
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use avsnode_signing::SignerBackend;
    use std::time::Duration;

    const VALID: &str = r#"
[node]
operator_address = "0x1111111111111111111111111111111111111111"
data_dir = "data"

[[signer]]
name = "bn254-main"
scheme = "bn254"
keystore = "keys/bn254.json"
password_file = "keys/bn254.pass"

[[signer]]
name = "ecdsa-main"
scheme = "ecdsa"
keystore = "keys/ecdsa.json"
password_file = "keys/ecdsa.pass"

[[avs]]
address = "0x2222222222222222222222222222222222222222"
max_staleness = "30m"
aggregators = [{ scheme = "ecdsa", address = "0x3333333333333333333333333333333333333333" }]
operator_sets = [
  { id = 0, signer = "bn254-main" },
  { id = 1, signer = "ecdsa-main", verifier = "0x4444444444444444444444444444444444444444", verifier_version = "1" },
]
[avs.performer]
runtime = "process"
command = "./performer"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/avsnode/avsnode.toml"), |_| None)
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(|p| p.to_string()).collect()
            }
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    #[test]
    fn valid_config_with_defaults_and_resolved_paths() {
        let config = parse(VALID).unwrap();
        assert_eq!(config.intake.listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(config.intake.max_message_size, 4 << 20);
        assert_eq!(config.ledger.retention, Duration::from_secs(14 * 86400));
        let avs = &config.avs[0];
        assert_eq!(avs.max_staleness, Duration::from_secs(1800));
        assert_eq!(avs.task_timeout, Duration::from_secs(10));
        assert_eq!(avs.max_output_size, 1_572_863);
        assert_eq!(config.node.data_dir, Path::new("/etc/avsnode/data"));
        assert_eq!(
            config.signers[0].keystore.as_deref(),
            Some(Path::new("/etc/avsnode/keys/bn254.json"))
        );
        assert!(
            matches!(&avs.performer, PerformerConfig::Process { command, .. } if command == Path::new("/etc/avsnode/./performer"))
        );
        let summary = config.summary();
        assert!(
            summary.contains("operator sets 0 (bn254-main), 1 (ecdsa-main)"),
            "{summary}"
        );
    }

    #[test]
    fn the_documented_example_is_valid() {
        let text = include_str!("../../../deploy/avsnode.example.toml");
        let config =
            Config::from_toml(text, Path::new("deploy/avsnode.example.toml"), |_| None).unwrap();
        assert_eq!(config.avs[0].operator_sets.len(), 2);
        let PerformerConfig::Docker(docker) = &config.avs[1].performer else {
            panic!("the second AVS runs in docker")
        };
        assert!(docker.read_only_rootfs && docker.drop_capabilities && docker.no_new_privileges);
        assert_eq!(docker.port, 8080);
        assert!(config.management.as_ref().is_some_and(|m| m.require_auth));
    }

    #[test]
    fn docker_performers_are_hardened_unless_told_otherwise() {
        let text = VALID.replace(
            "runtime = \"process\"\ncommand = \"./performer\"",
            "runtime = \"docker\"\nimage = \"perf:v1\"",
        );
        let config = parse(&text).unwrap();
        let PerformerConfig::Docker(docker) = &config.avs[0].performer else {
            panic!("docker performer expected")
        };
        assert!(docker.read_only_rootfs && docker.drop_capabilities && docker.no_new_privileges);
        assert_eq!(docker.pull.as_str(), "if-not-present");
        assert_eq!(
            (docker.resources.memory_mib, docker.resources.pids),
            (1024, 512)
        );
        assert_eq!(
            config.node_id(),
            "0x1111111111111111111111111111111111111111"
        );
        assert_eq!(
            config.docker_network(),
            "avsnode-0x1111111111111111111111111111111111111111"
        );

        let bad = text
            .replace(
                "image = \"perf:v1\"",
                "image = \"perf:v1\"\npull = \"sometimes\"\nenv = { PORT = \"1\", \"A-B\" = \"2\" }",
            )
            .replace("[node]\n", "[node]\nid = \"no/slashes\"\n")
            + "\n[management]\nadmins = []\n";
        let found = problems(&bad);
        for expected in [
            "avs[0].performer.pull:",
            "avs[0].performer.env: env name PORT is set by the node",
            "avs[0].performer.env: env name \"A-B\" is not [A-Za-z_][A-Za-z0-9_]*",
            "node.id:",
            "management.admins: no admin key",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "{expected} in {found:?}"
            );
        }
        let unknown = text.replace(
            "image = \"perf:v1\"",
            "image = \"perf:v1\"\nprivileged = true",
        );
        assert!(
            matches!(parse(&unknown), Err(ConfigError::Parse { message, .. }) if message.contains("privileged"))
        );
    }

    #[test]
    fn misspelt_key_is_an_error_naming_it() {
        let text = VALID.replace("max_staleness", "max_stalenes");
        let Err(ConfigError::Parse { message, .. }) = parse(&text) else {
            panic!("expected a parse error")
        };
        assert!(message.contains("max_stalenes"), "{message}");
    }

    #[test]
    fn bad_duration_says_how_to_write_one() {
        let text = VALID.replace("\"30m\"", "\"30 parsecs\"");
        let Err(ConfigError::Parse { message, .. }) = parse(&text) else {
            panic!("expected a parse error")
        };
        assert!(
            message.contains("invalid duration") && message.contains("\"10s\""),
            "{message}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let text = VALID
            .replace("signer = \"ecdsa-main\"", "signer = \"ecdsa-mian\"")
            .replace("0x1111111111111111111111111111111111111111", "0x11")
            .replace("max_staleness = \"30m\"", "max_staleness = \"30d\"");
        let found = problems(&text);
        assert!(
            found.contains(
                &"avs[0].operator_sets[1].signer: no signer named \"ecdsa-mian\"".to_string()
            ),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("node.operator_address: address")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("avs[0].max_staleness: must be below ledger.retention")),
            "{found:?}"
        );
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn a_shared_ledger_needs_its_table_and_a_url_without_a_password() {
        let postgres = format!("{VALID}\n[ledger]\nbackend = \"postgres\"\n");
        assert_eq!(
            problems(&postgres),
            ["ledger.backend: \"postgres\" needs [ledger.postgres] with at least url"]
        );
        let unused = format!("{VALID}\n[ledger.postgres]\nurl = \"postgresql://a@h/db\"\n");
        assert!(problems(&unused)[0].starts_with("ledger.postgres: set, but"));
        let with_password = format!(
            "{VALID}\n[ledger]\nbackend = \"postgres\"\n[ledger.postgres]\n\
             url = \"postgresql://a:secret@h/db\"\nclaim_lease = \"10ms\"\n"
        );
        let found = problems(&with_password);
        assert!(
            found
                .contains(&"ledger.postgres.url: holds a password; put it in password_file".into()),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("ledger.postgres.claim_lease")),
            "{found:?}"
        );
        assert!(!found.iter().any(|p| p.contains("secret")), "{found:?}");
        let good = format!(
            "{VALID}\n[ledger]\nbackend = \"postgres\"\n[ledger.postgres]\n\
             url = \"postgresql://a@h:5432/db\"\n"
        );
        let config = parse(&good).unwrap();
        assert_eq!(config.ledger.backend, Backend::Postgres);
    }

    #[test]
    fn ecdsa_sets_need_a_verifier_and_others_must_not_have_one() {
        let text = VALID
            .replace(", verifier = \"0x4444444444444444444444444444444444444444\", verifier_version = \"1\"", "")
            .replace("{ id = 0, signer = \"bn254-main\" }", "{ id = 0, signer = \"bn254-main\", verifier = \"0x4444444444444444444444444444444444444444\" }");
        let found = problems(&text);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("avs[0].operator_sets[1].verifier: required")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("avs[0].operator_sets[1].verifier_version: required")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("avs[0].operator_sets[0].verifier: only ecdsa")),
            "{found:?}"
        );
    }

    /// The EIP-712 version is derived from the contract's version() by the contract's rule, and
    /// check-config shows the domain separator to compare with the chain's. Expected values from
    /// Python (pycryptodome keccak) with the contract's formula.
    #[test]
    fn the_verifier_domain_follows_the_contract_version_rule() {
        const DOMAIN_V1: &str = "37aafd5b959ddb0422981a2e32b0c68eb8549960c37da7042756e66128fb4ea5";
        // What an avsnode that hashed "1.2.3" whole signed under: a domain the chain rejects.
        const WHOLE_STRING: &str =
            "4d32332108f315a7210233b3b0dae692dfa7b701b51f5d32bd11f565ded0f2bf";
        let text = VALID.replace("verifier_version = \"1\"", "verifier_version = \"1.2.3\"");
        let summary = parse(&text).expect("valid").summary();
        assert!(
            summary.contains(&format!(
                "operator set 1: ecdsa verifier 0x4444444444444444444444444444444444444444 \
                 version \"1.2.3\" (EIP-712 version \"1\"), domain separator 0x{DOMAIN_V1}"
            )),
            "{summary}"
        );
        assert!(!summary.contains(WHOLE_STRING), "{summary}");

        let pinned = |domain: &str| {
            text.replace(
                "verifier_version = \"1.2.3\"",
                &format!(
                    "verifier_version = \"1.2.3\", verifier_domain_separator = \"0x{domain}\""
                ),
            )
        };
        parse(&pinned(DOMAIN_V1)).expect("the pinned domain matches");
        let found = problems(&pinned(WHOLE_STRING));
        assert!(
            found.iter().any(|p| p.starts_with(
                "avs[0].operator_sets[1].verifier_domain_separator: the domain separator"
            ) && p.contains(DOMAIN_V1)),
            "{found:?}"
        );
        let found = problems(&text.replace("\"1.2.3\"", "\"\""));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("avs[0].operator_sets[1].verifier_version: certificate verifier: the verifier version is empty")),
            "{found:?}"
        );
    }

    #[test]
    fn durations_are_bounded() {
        let text = VALID.replace("[node]\n", "[node]\nshutdown_grace = \"1000000000y\"\n");
        let error = parse(&text)
            .expect_err("a duration of a billion years")
            .to_string();
        assert!(error.contains("longer than the 100 years"), "{error}");
    }

    #[test]
    fn aggregator_keys_are_checked() {
        let text = VALID.replace(
            "{ scheme = \"ecdsa\", address = \"0x3333333333333333333333333333333333333333\" }",
            "{ scheme = \"bn254\", address = \"0x3333333333333333333333333333333333333333\", public_key = \"0x1234\" }",
        );
        let found = problems(&text);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("avs[0].aggregators[0].public_key: BN254 G2")),
            "{found:?}"
        );
    }

    #[test]
    fn mutual_tls_binds_every_aggregator_to_certificate_names() {
        let aggregator =
            "{ scheme = \"ecdsa\", address = \"0x3333333333333333333333333333333333333333\" }";
        let mtls = VALID.replacen(
            "[[signer]]",
            "[intake.tls]\ncert = \"tls/intake.pem\"\nkey = \"tls/intake.key\"\nclient_ca = \"/pki/aggregators.pem\"\n\n[[signer]]",
            1,
        );
        assert_eq!(
            problems(&mtls),
            [
                "avs[0].aggregators[0].tls_client_names: required with mutual TLS on the intake (intake.tls.client_ca): the DNS names of this aggregator's client certificate"
            ]
        );
        let named = mtls.replace(
            aggregator,
            "{ scheme = \"ecdsa\", address = \"0x3333333333333333333333333333333333333333\", tls_client_names = [\"agg.example.org\"] }",
        );
        let config = parse(&named).unwrap();
        let tls = config.intake.tls.as_ref().unwrap();
        assert_eq!(tls.cert, Path::new("/etc/avsnode/tls/intake.pem"));
        assert_eq!(
            tls.client_ca.as_deref(),
            Some(Path::new("/pki/aggregators.pem"))
        );
        let bad_name = named.replace("agg.example.org", "not a name");
        assert_eq!(
            problems(&bad_name),
            ["avs[0].aggregators[0].tls_client_names: \"not a name\" is not a DNS name"]
        );
        let without_mtls = VALID.replace(
            aggregator,
            "{ scheme = \"ecdsa\", address = \"0x3333333333333333333333333333333333333333\", tls_client_names = [\"agg.example.org\"] }",
        );
        assert_eq!(
            problems(&without_mtls),
            [
                "avs[0].aggregators[0].tls_client_names: only used with mutual TLS on the intake; set intake.tls.client_ca"
            ]
        );
    }

    /// `VALID` with the ecdsa signer's key lines replaced by `backend`.
    fn with_ecdsa_backend(backend: &str, scheme: &str) -> String {
        VALID.replace(
            "name = \"ecdsa-main\"\nscheme = \"ecdsa\"\nkeystore = \"keys/ecdsa.json\"\npassword_file = \"keys/ecdsa.pass\"",
            &format!("name = \"ecdsa-main\"\nscheme = \"{scheme}\"\n{backend}"),
        )
    }

    #[test]
    fn pkcs11_and_remote_signers_parse_and_resolve_paths() {
        let pkcs11 = with_ecdsa_backend(
            r#"pkcs11 = { module = "/usr/lib/softhsm/libsofthsm2.so", token_label = "avs", key_label = "op", pin_file = "keys/pin" }"#,
            "ecdsa",
        );
        let config = parse(&pkcs11).unwrap();
        let SignerBackend::Pkcs11(p) = config.signers[1].backend().unwrap() else {
            panic!("expected a pkcs11 backend");
        };
        assert_eq!(p.pin_file, Path::new("/etc/avsnode/keys/pin"));
        assert_eq!(p.module, Path::new("/usr/lib/softhsm/libsofthsm2.so"));
        assert_eq!(config.signers[1].backend_label(), "pkcs11");
        assert!(
            config
                .summary()
                .contains("PKCS#11 token \"avs\", key label \"op\"")
        );

        let remote = with_ecdsa_backend(
            r#"remote = { url = "https://signer:9500", ca = "tls/ca.pem", cert = "tls/node.pem", key = "tls/node.key", timeout = "500ms" }"#,
            "ecdsa",
        );
        let config = parse(&remote).unwrap();
        let SignerBackend::Remote(r) = config.signers[1].backend().unwrap() else {
            panic!("expected a remote backend");
        };
        assert_eq!(r.key, Path::new("/etc/avsnode/tls/node.key"));
        assert_eq!(r.timeout, Duration::from_millis(500));
        assert_eq!(r.key_name, None);
        assert!(
            config
                .summary()
                .contains("remote signer https://signer:9500, key \"ecdsa-main\"")
        );

        // The PIN file has an environment override like password files.
        let env = |name: &str| {
            (name == "AVSNODE_SIGNER_ECDSA_MAIN_PIN_FILE").then(|| "/run/secrets/pin".to_string())
        };
        let config =
            Config::from_toml(&pkcs11, Path::new("/etc/avsnode/avsnode.toml"), env).unwrap();
        let SignerBackend::Pkcs11(p) = config.signers[1].backend().unwrap() else {
            panic!("expected a pkcs11 backend");
        };
        assert_eq!(p.pin_file, Path::new("/run/secrets/pin"));
    }

    #[test]
    fn signer_backend_mistakes_are_named() {
        let bn254_over_pkcs11 = with_ecdsa_backend(
            r#"pkcs11 = { module = "m.so", token_label = "avs", key_label = "op", pin_file = "pin" }"#,
            "bn254",
        );
        let found = problems(&bn254_over_pkcs11);
        assert!(
            found.iter().any(|p| p.starts_with("signer[1].pkcs11:")
                && p.contains("PKCS#11 has no pairing curves")),
            "{found:?}"
        );
        let both = with_ecdsa_backend(
            "keystore = \"k.json\"\npassword_file = \"k.pass\"\nremote = { url = \"https://s:1\", ca = \"a\", cert = \"b\", key = \"c\" }",
            "ecdsa",
        );
        assert!(
            problems(&both)
                .iter()
                .any(|p| p.starts_with("signer[1]: more than one backend")),
            "{:?}",
            problems(&both)
        );
        let none = with_ecdsa_backend("", "ecdsa");
        assert!(
            problems(&none)
                .iter()
                .any(|p| p.starts_with("signer[1]: no key"))
        );
        let no_password = with_ecdsa_backend("keystore = \"k.json\"", "ecdsa");
        assert!(
            problems(&no_password)
                .iter()
                .any(|p| p == "signer[1]: keystore needs password_file")
        );
        let label_and_id = with_ecdsa_backend(
            r#"pkcs11 = { module = "m.so", token_label = "avs", key_label = "op", key_id = "01", pin_file = "pin" }"#,
            "ecdsa",
        );
        assert!(
            problems(&label_and_id)
                .iter()
                .any(|p| p == "signer[1].pkcs11: give exactly one of key_label and key_id")
        );
        let bad_id = with_ecdsa_backend(
            r#"pkcs11 = { module = "m.so", token_label = "avs", key_id = "zz", pin_file = "pin" }"#,
            "ecdsa",
        );
        assert!(
            problems(&bad_id)
                .iter()
                .any(|p| p.starts_with("signer[1].pkcs11.key_id:"))
        );
        let plain = with_ecdsa_backend(
            r#"remote = { url = "http://signer:9500", ca = "a", cert = "b", key = "c" }"#,
            "ecdsa",
        );
        assert!(
            problems(&plain)
                .iter()
                .any(|p| p.starts_with("signer[1].remote.url:") && p.contains("mutual TLS"))
        );
    }

    #[test]
    fn environment_overrides_ports_data_dir_and_password_files() {
        let env = |name: &str| match name {
            "AVSNODE_INTAKE_LISTEN" => Some("127.0.0.1:7000".to_string()),
            "AVSNODE_DATA_DIR" => Some("/var/lib/avsnode".to_string()),
            "AVSNODE_SIGNER_ECDSA_MAIN_PASSWORD_FILE" => Some("/run/secrets/ecdsa".to_string()),
            _ => None,
        };
        let config = Config::from_toml(VALID, Path::new("/etc/avsnode/avsnode.toml"), env).unwrap();
        assert_eq!(config.intake.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(config.node.data_dir, Path::new("/var/lib/avsnode"));
        assert_eq!(
            config.signers[1].password_file.as_deref(),
            Some(Path::new("/run/secrets/ecdsa"))
        );
        assert_eq!(
            config.signers[0].password_file.as_deref(),
            Some(Path::new("/etc/avsnode/keys/bn254.pass"))
        );

        let bad = |name: &str| (name == "AVSNODE_INTAKE_LISTEN").then(|| "nowhere".to_string());
        let Err(ConfigError::Invalid { problems, .. }) =
            Config::from_toml(VALID, Path::new("x.toml"), bad)
        else {
            panic!("expected a problem")
        };
        assert_eq!(problems[0].path, "AVSNODE_INTAKE_LISTEN");

        // The image sets AVSNODE_DATA_DIR: the file may leave data_dir out, but not both.
        let (line, _) = VALID
            .lines()
            .find_map(|l| l.starts_with("data_dir = ").then_some((l, ())))
            .unwrap();
        let without = VALID.replace(line, "");
        let config =
            Config::from_toml(&without, Path::new("/etc/avsnode/avsnode.toml"), env).unwrap();
        assert_eq!(config.node.data_dir, Path::new("/var/lib/avsnode"));
        let Err(ConfigError::Invalid { problems, .. }) =
            Config::from_toml(&without, Path::new("/etc/avsnode/avsnode.toml"), |_| None)
        else {
            panic!("no data_dir anywhere was accepted")
        };
        assert_eq!(problems[0].path, "node.data_dir", "{problems:?}");
    }

    /// VALID with `[chain]` and its aggregators read from chain.
    fn with_chain(chain: &str) -> String {
        let aggregators = r#"aggregators = [{ scheme = "ecdsa", address = "0x3333333333333333333333333333333333333333" }]"#;
        VALID
            .replace(aggregators, "aggregators = \"from_chain\"")
            .replace(
                "[[signer]]\nname = \"bn254-main\"",
                &format!("{chain}\n[[signer]]\nname = \"bn254-main\""),
            )
    }

    const CHAIN: &str = r#"[chain]
rpc_urls = ["https://eth.example/v3/sEcReT-kEy", "http://127.0.0.1:8545"]
chain_id = 1
allocation_manager = "0x948a420b8CC1d6BFd0B6087C2E7c344a2CD0bc39"
key_registrar = "0x54f4bC6bDEbe479173a2bbDc31dD7178408A57A4"
"#;

    #[test]
    fn chain_section_with_defaults_and_aggregators_from_chain() {
        let config = parse(&with_chain(CHAIN)).unwrap();
        let chain = config.chain.as_ref().expect("[chain]");
        assert_eq!(config.avs[0].aggregators, Aggregators::FromChain);
        assert!(config.avs[0].aggregators.list().is_empty());
        let settings = chain.settings();
        assert_eq!(settings.rpc_urls.len(), 2);
        assert_eq!(settings.follow_distance, 2);
        assert_eq!(settings.poll_interval, Duration::from_secs(4));
        assert_eq!(settings.serve_cached_for, Duration::from_secs(600));
        assert!(config.summary().contains("aggregators from chain"));
        // The URL's path is an API key: never shown.
        for shown in [
            format!("{config:?}"),
            format!("{settings:?}"),
            config.summary(),
        ] {
            assert!(!shown.contains("sEcReT"), "{shown}");
        }
        assert!(format!("{settings:?}").contains("https://eth.example/…"));
        // With [chain], an ECDSA set's verifier_version may be left to the chain.
        let text = with_chain(CHAIN).replace(", verifier_version = \"1\"", "");
        assert!(
            parse(&text).unwrap().avs[0].operator_sets[1]
                .verifier_version
                .is_none()
        );
        assert!(
            problems(&VALID.replace(", verifier_version = \"1\"", ""))
                .iter()
                .any(|p| p.starts_with("avs[0].operator_sets[1].verifier_version: required"))
        );
    }

    #[test]
    fn chain_problems_name_the_key_and_never_the_url() {
        let bad = CHAIN
            .replace("\"http://127.0.0.1:8545\"", "\"ftp://sEcReT@host/x\"")
            .replace("chain_id = 1", "chain_id = 0")
            .replace(
                "0x54f4bC6bDEbe479173a2bbDc31dD7178408A57A4",
                "0x0000000000000000000000000000000000000000",
            )
            + "poll_interval = \"10m\"\n";
        let found = problems(&with_chain(&bad));
        for expected in [
            "chain.rpc_urls[1]: not an http:// or https:// URL with a host",
            "chain.chain_id: must be the chain's id",
            "chain.key_registrar: must not be the zero address",
            "chain.serve_cached_for: must exceed poll_interval",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "{expected}: {found:?}"
            );
        }
        assert!(!found.iter().any(|p| p.contains("sEcReT")), "{found:?}");
        // "from_chain" without [chain]; a misspelt source; an empty list.
        let without = with_chain("");
        assert!(
            problems(&without).iter().any(
                |p| p.starts_with("avs[0].aggregators: \"from_chain\" needs a [chain] section")
            ),
        );
        let misspelt = without.replace("\"from_chain\"", "\"from-chain\"");
        let Err(ConfigError::Parse { message, .. }) = parse(&misspelt) else {
            panic!("a misspelt source is refused")
        };
        assert!(
            message.contains("from_chain") && message.contains("from-chain"),
            "{message}"
        );
    }
}
