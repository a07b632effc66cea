//! The Hourglass executor's YAML configuration (`ponos/pkg/executor/executorConfig` in
//! Layr-Labs/hourglass-monorepo), read as the executor reads it: keys match case-insensitively,
//! the three keys whose Go field name differs from their tag are accepted in both spellings,
//! scalars are weakly typed (`chainId: "31337"` is a number), and keys the executor does not know
//! are ignored — here with a note. `tests/fixtures/hourglass/FORMAT.md` is the reference.
//!
//! Secrets are read and dropped: the inline ECDSA signing key is reduced to its address on
//! reading, the transaction key and the BLS password are only seen to be there. Messages never
//! repeat a value that could be a secret.

use avsnode_signer::messages::Address;
use avsnode_signing::Problem;

use super::yaml::{self, Node, Value};

/// What the importer takes from an executor configuration, checked.
#[derive(Debug)]
pub(crate) struct ExecutorConfig {
    /// `grpcPort` (absent or 0: the executor bound an ephemeral port, FORMAT.md §0).
    pub(crate) grpc_port: Option<u16>,
    /// `managementServerGrpcPort` (absent or 0: served on the task port).
    pub(crate) management_port: Option<u16>,
    /// `performerNetworkName`.
    pub(crate) performer_network: Option<String>,
    /// `operator.address`.
    pub(crate) operator: Address,
    /// `operator.operatorPrivateKey`: whether it is there (never what it holds).
    pub(crate) transaction_key: bool,
    /// `operator.signingKeys.bls`.
    pub(crate) bls: Option<BlsKey>,
    /// `operator.signingKeys.ecdsa`, when it gives the executor a key.
    pub(crate) ecdsa: Option<EcdsaKey>,
    /// `l1Chain.rpcUrl`: may hold an API key, so never printed.
    pub(crate) rpc_url: String,
    /// `l1Chain.chainId`.
    pub(crate) chain_id: u64,
    /// `authentication.enabled` (or `authConfig.enabled`).
    pub(crate) auth_enabled: bool,
    /// `avsPerformers[]`.
    pub(crate) performers: Vec<Performer>,
    /// `storage.type` (`memory` when the block is there without one).
    pub(crate) storage: Option<String>,
    /// `debug`.
    pub(crate) debug: bool,
    /// Keys the executor ignores, or that have no avsnode equivalent, with why.
    pub(crate) ignored: Vec<Problem>,
}

/// `operator.signingKeys.bls`.
#[derive(Debug)]
pub(crate) struct BlsKey {
    pub(crate) keystore: BlsKeystore,
    /// Whether `password` is given (its value is never kept).
    pub(crate) password_given: bool,
}

/// Where the BN254 keystore is.
#[derive(Debug)]
pub(crate) enum BlsKeystore {
    /// `keystoreFile`: a path the executor read.
    File(String),
    /// `keystore`: the keystore JSON itself (encrypted; it wins over `keystoreFile`).
    Inline(String),
}

/// `operator.signingKeys.ecdsa`.
#[derive(Debug)]
pub(crate) enum EcdsaKey {
    /// `privateKey` (or the legacy plain string): the key's address; the key itself is dropped.
    Inline { address: Address },
    /// `remoteSigner: true` (Web3Signer), as `remoteSignerConfig.fromAddress` names it.
    Web3Signer { from_address: Option<String> },
}

/// One `avsPerformers[]` entry.
#[derive(Debug)]
pub(crate) struct Performer {
    pub(crate) avs: Address,
    /// `repository:tag`; absent: the executor had no image until a `DeployArtifact`.
    pub(crate) image: Option<String>,
    pub(crate) env: Vec<Env>,
    /// `deploymentMode: kubernetes`.
    pub(crate) kubernetes: bool,
    /// `processType` left out (the executor refuses to start such a performer).
    pub(crate) process_type_missing: bool,
}

/// One `envs[]` entry.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) name: String,
    pub(crate) value: EnvValue,
}

#[derive(Debug)]
pub(crate) enum EnvValue {
    /// `value`.
    Literal(String),
    /// `valueFromEnv`: the name of a variable of the executor's own environment.
    FromEnv(String),
}

/// Why a file cannot be imported.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Yaml(#[from] yaml::YamlError),
    /// Every problem found, each with its YAML key path.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// Top-level keys that older Hourglass docs and examples write and no executor struct has.
const STALE_TOP_LEVEL: [&str; 11] = [
    "avss",
    "avsRegistrarAddress",
    "workerCount",
    "signingCurve",
    "env",
    "resources",
    "metrics",
    "logging",
    "health",
    "chains",
    "l2Chain",
];

/// Reads an executor configuration.
pub(crate) fn read(text: &str) -> Result<ExecutorConfig, ReadError> {
    let doc = yaml::parse(text)?;
    let mut reader = Reader::default();
    let config = reader.config(&doc);
    match config {
        Some(config) if reader.problems.is_empty() => Ok(ExecutorConfig {
            ignored: reader.ignored,
            ..config
        }),
        _ => Err(ReadError::Invalid(reader.problems)),
    }
}

/// `operator`, read.
struct Operator {
    address: Address,
    transaction_key: bool,
    bls: Option<BlsKey>,
    ecdsa: Option<EcdsaKey>,
}

/// Collects problems and ignored keys while reading.
#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
    ignored: Vec<Problem>,
}

/// `path.key`, or `key` at the top.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A mapping's entries, looked up case-insensitively; remembers which were read, so the rest
/// can be reported as ignored.
struct Fields<'a> {
    path: String,
    entries: Vec<(&'a str, &'a Node)>,
    used: Vec<bool>,
}

impl<'a> Fields<'a> {
    /// The value of `key` (any case); `None` when absent or null.
    fn get(&mut self, key: &str) -> Option<&'a Node> {
        let i = self
            .entries
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(key))?;
        self.used[i] = true;
        let node = self.entries[i].1;
        (node.value != Value::Null).then_some(node)
    }

    /// Whether `key` is there (any case), even null.
    fn has(&self, key: &str) -> bool {
        self.entries
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(key))
    }
}

impl Reader {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn ignore(&mut self, path: impl Into<String>, why: impl Into<String>) {
        self.ignored.push(Problem {
            path: path.into(),
            message: why.into(),
        });
    }

    /// The entries of a mapping at `path`; `None` (with a problem) for a list or a scalar.
    fn fields<'a>(&mut self, node: &'a Node, path: &str) -> Option<Fields<'a>> {
        let entries: &[(Node, Node)] = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => &[],
            _ => {
                self.problem(
                    path,
                    format!(
                        "expected a mapping, found {} (line {})",
                        node.kind(),
                        node.line
                    ),
                );
                return None;
            }
        };
        let mut out: Vec<(&'a str, &'a Node)> = Vec::new();
        for (key, value) in entries {
            let Value::Scalar(name) = &key.value else {
                self.problem(
                    path,
                    format!("a key that is not a string (line {})", key.line),
                );
                continue;
            };
            // Both Go decoders match keys case-insensitively, so two spellings are one key.
            if let Some((first, _)) = out.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                self.problem(
                    join(path, name),
                    format!(
                        "given twice (line {}, and {first:?} before it; keys match case-insensitively)",
                        key.line
                    ),
                );
                continue;
            }
            out.push((name.as_str(), value));
        }
        Some(Fields {
            path: path.to_owned(),
            used: vec![false; out.len()],
            entries: out,
        })
    }

    /// A key under its yaml tag or its Go field name (FORMAT.md §0: the examples write the tag,
    /// the executor binary matches the field name); both given is ambiguous.
    fn either<'a>(&mut self, fields: &mut Fields<'a>, tag: &str, field: &str) -> Option<&'a Node> {
        if fields.has(tag) && fields.has(field) {
            let path = join(&fields.path, tag);
            self.problem(
                path,
                format!("given twice, as {tag:?} and as {field:?}: keep one"),
            );
        }
        let by_tag = fields.get(tag);
        let by_field = fields.get(field);
        by_tag.or(by_field)
    }

    /// Reports the keys of `fields` that were not read as ignored by the executor.
    fn finish(&mut self, fields: Fields<'_>) {
        for ((key, _), used) in fields.entries.iter().zip(&fields.used) {
            if !used {
                let path = join(&fields.path, key);
                if fields.path.is_empty()
                    && STALE_TOP_LEVEL.iter().any(|s| s.eq_ignore_ascii_case(key))
                {
                    self.ignore(
                        path,
                        "not read by the Hourglass executor (older Hourglass docs and examples have it); not imported",
                    );
                } else {
                    self.ignore(
                        path,
                        "not a field of the Hourglass executor config (the executor ignores it); not imported",
                    );
                }
            }
        }
    }

    /// A string; `None` (with a problem) for a list or a mapping.
    fn string(&mut self, node: Option<&Node>, path: &str) -> Option<String> {
        match &node?.value {
            Value::Scalar(text) => Some(text.clone()),
            _ => {
                let node = node?;
                self.problem(
                    path,
                    format!(
                        "expected a string, found {} (line {})",
                        node.kind(),
                        node.line
                    ),
                );
                None
            }
        }
    }

    /// A number, written plain or quoted (the executor's decoder is weakly typed).
    fn number<T: std::str::FromStr>(
        &mut self,
        node: Option<&Node>,
        path: &str,
        what: &str,
    ) -> Option<T> {
        let node = node?;
        if let Value::Scalar(text) = &node.value
            && let Ok(value) = text.trim().parse()
        {
            return Some(value);
        }
        self.problem(path, format!("not {what} (line {})", node.line));
        None
    }

    /// A boolean: `true`/`false` as YAML writes them, or a string Go's `strconv.ParseBool` takes.
    fn boolean(&mut self, node: Option<&Node>, path: &str) -> Option<bool> {
        let node = node?;
        match &node.value {
            Value::Scalar(text) => match text.as_str() {
                "true" | "True" | "TRUE" | "t" | "T" | "1" => Some(true),
                "false" | "False" | "FALSE" | "f" | "F" | "0" => Some(false),
                _ => {
                    self.problem(path, format!("not true or false (line {})", node.line));
                    None
                }
            },
            _ => {
                self.problem(
                    path,
                    format!(
                        "expected true or false, found {} (line {})",
                        node.kind(),
                        node.line
                    ),
                );
                None
            }
        }
    }

    /// An address: 40 hex digits, `0x` optional (as go-ethereum's `HexToAddress` reads it).
    fn address(&mut self, node: Option<&Node>, path: &str) -> Option<Address> {
        let node = node?;
        let text = self.string(Some(node), path)?;
        let digits = text.trim();
        let digits = digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"))
            .unwrap_or(digits);
        match format!("0x{digits}").parse() {
            Ok(address) if digits.len() == 40 => Some(address),
            _ => {
                self.problem(
                    path,
                    format!(
                        "not a 20-byte hex address (0x and 40 hex digits) (line {})",
                        node.line
                    ),
                );
                None
            }
        }
    }

    /// A port: 0 (or absent) means none was set.
    fn port(&mut self, node: Option<&Node>, path: &str) -> Option<u16> {
        self.number::<u16>(node, path, "a port number (0-65535)")
            .filter(|p| *p != 0)
    }

    fn config(&mut self, doc: &Node) -> Option<ExecutorConfig> {
        let mut top = self.fields(doc, "")?;
        let grpc_port = self.port(top.get("grpcPort"), "grpcPort");
        let management_port = self.port(
            top.get("managementServerGrpcPort"),
            "managementServerGrpcPort",
        );
        let performer_network = self
            .string(top.get("performerNetworkName"), "performerNetworkName")
            .filter(|n| !n.is_empty());
        let debug = self.boolean(top.get("debug"), "debug").unwrap_or(false);

        let operator = match top.get("operator") {
            Some(node) => self.operator(node),
            None => {
                self.problem("operator", "required");
                None
            }
        };
        let chain = match top.get("l1Chain") {
            Some(node) => self.chain(node),
            None => {
                self.problem("l1Chain", "required (rpcUrl and chainId)");
                None
            }
        };
        let auth_enabled = match self.either(&mut top, "authentication", "authConfig") {
            Some(node) => self.fields(node, "authentication").and_then(|mut f| {
                let enabled = self.boolean(f.get("enabled"), "authentication.enabled");
                self.finish(f);
                enabled
            }),
            None => None,
        }
        .unwrap_or(false);
        let storage = match top.get("storage") {
            Some(node) => self.fields(node, "storage").map(|mut f| {
                let kind = self.string(f.get("type"), "storage.type");
                // Read only to be named in the note: avsnode has its own ledger.
                let _ = self.either(&mut f, "badger", "badgerConfig");
                self.finish(f);
                kind.filter(|k| !k.is_empty())
                    .unwrap_or_else(|| "memory".into())
            }),
            None => None,
        };
        let performers = match top.get("avsPerformers") {
            None => Vec::new(),
            Some(node) => match &node.value {
                Value::Seq(items) => items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| self.performer(item, &format!("avsPerformers[{i}]")))
                    .collect(),
                _ => {
                    self.problem(
                        "avsPerformers",
                        format!(
                            "expected a list, found {} (line {})",
                            node.kind(),
                            node.line
                        ),
                    );
                    Vec::new()
                }
            },
        };
        if top.get("contracts").is_some() {
            self.ignore(
                "contracts",
                "not imported: it replaces the executor's core-contract list; avsnode reads \
                 AllocationManager and KeyRegistrar at the addresses in [chain] and uses no TaskMailbox",
            );
        }
        if top.get("overrideContracts").is_some() {
            self.ignore(
                "overrideContracts",
                "not imported: avsnode uses no TaskMailbox (it answers the aggregator directly)",
            );
        }
        if top.get("kubernetes").is_some() {
            self.ignore(
                "kubernetes",
                "not imported: avsnode does not create Kubernetes performers; a kubernetes \
                 performer becomes runtime = \"remote\" with the endpoint of its Service",
            );
        }
        self.finish(top);

        let operator = operator?;
        let (rpc_url, chain_id) = chain?;
        Some(ExecutorConfig {
            grpc_port,
            management_port,
            performer_network,
            operator: operator.address,
            transaction_key: operator.transaction_key,
            bls: operator.bls,
            ecdsa: operator.ecdsa,
            rpc_url,
            chain_id,
            auth_enabled,
            performers,
            storage,
            debug,
            ignored: Vec::new(),
        })
    }

    fn operator(&mut self, node: &Node) -> Option<Operator> {
        let mut f = self.fields(node, "operator")?;
        let address = match f.get("address") {
            Some(node) => self.address(Some(node), "operator.address"),
            None => {
                self.problem("operator.address", "required");
                None
            }
        };
        // Only whether it is there: avsnode sends no transactions, so it is never read.
        let transaction_key = match f.get("operatorPrivateKey") {
            Some(node) => {
                if let Value::Map(_) = node.value
                    && let Some(mut k) = self.fields(node, "operator.operatorPrivateKey")
                {
                    for key in ["privateKey", "remoteSignerConfig"] {
                        let _ = k.get(key);
                    }
                    let _ = self.either(&mut k, "remoteSigner", "useRemoteSigner");
                    self.finish(k);
                }
                true
            }
            None => false,
        };
        let (mut bls, mut ecdsa) = (None, None);
        match f.get("signingKeys") {
            Some(node) => {
                if let Some(mut keys) = self.fields(node, "operator.signingKeys") {
                    let (bls_node, ecdsa_node) = (keys.get("bls"), keys.get("ecdsa"));
                    if bls_node.is_none() && ecdsa_node.is_none() {
                        self.problem("operator.signingKeys", "one of bls and ecdsa is required");
                    }
                    bls = bls_node.and_then(|n| self.bls(n));
                    ecdsa = ecdsa_node.and_then(|n| self.ecdsa(n));
                    self.finish(keys);
                }
            }
            None => self.problem("operator.signingKeys", "required (bls or ecdsa)"),
        }
        self.finish(f);
        Some(Operator {
            address: address?,
            transaction_key,
            bls,
            ecdsa,
        })
    }

    fn bls(&mut self, node: &Node) -> Option<BlsKey> {
        const AT: &str = "operator.signingKeys.bls";
        let mut f = self.fields(node, AT)?;
        let inline = self
            .string(f.get("keystore"), &format!("{AT}.keystore"))
            .filter(|k| !k.trim().is_empty());
        let file = self
            .string(f.get("keystoreFile"), &format!("{AT}.keystoreFile"))
            .filter(|k| !k.is_empty());
        let password_given = f.get("password").is_some();
        self.finish(f);
        let keystore = match (inline, file) {
            // The executor uses the inline keystore when both are given.
            (Some(json), _) => {
                match avsnode_keystore::Keystore::from_json(&json) {
                    Ok(k) if k.curve() == avsnode_keystore::Curve::Bn254 => {}
                    Ok(_) => self.problem(
                        format!("{AT}.keystore"),
                        "not a BN254 keystore (no \"curveType\": \"bn254\")",
                    ),
                    Err(e) => self.problem(
                        format!("{AT}.keystore"),
                        format!("not a keystore avsnode reads: {e}"),
                    ),
                }
                BlsKeystore::Inline(json)
            }
            (None, Some(path)) => BlsKeystore::File(path),
            (None, None) => {
                self.problem(AT, "keystore or keystoreFile is required");
                return None;
            }
        };
        Some(BlsKey {
            keystore,
            password_given,
        })
    }

    /// `signingKeys.ecdsa`: a mapping, or (before July 2025) the hex key as a plain string.
    fn ecdsa(&mut self, node: &Node) -> Option<EcdsaKey> {
        const AT: &str = "operator.signingKeys.ecdsa";
        if let Value::Scalar(text) = &node.value {
            return self.ecdsa_secret(text, AT, node.line);
        }
        let mut f = self.fields(node, AT)?;
        let remote = self
            .either(&mut f, "remoteSigner", "useRemoteSigner")
            .and_then(|n| self.boolean(Some(n), &format!("{AT}.remoteSigner")))
            .unwrap_or(false);
        let secret = f.get("privateKey");
        let mut from_address = None;
        if let Some(config) = f.get("remoteSignerConfig")
            && let Some(mut c) = self.fields(config, &format!("{AT}.remoteSignerConfig"))
        {
            from_address = self.string(
                c.get("fromAddress"),
                &format!("{AT}.remoteSignerConfig.fromAddress"),
            );
            // The URL may carry credentials and the PEMs a private key: read, never kept.
            for key in ["url", "caCert", "cert", "key", "publicKey"] {
                let _ = c.get(key);
            }
            self.finish(c);
        }
        if f.get("keystore").is_some() {
            self.ignore(
                format!("{AT}.keystore"),
                "ignored by the executor (hgctl's template writes it, but the executor has no \
                 ECDSA keystore option); not imported. If it is a Web3 v3 keystore, \
                 `avsnode keys import --scheme ecdsa --from-keystore FILE` re-encrypts it for avsnode",
            );
        }
        self.finish(f);
        if remote {
            return Some(EcdsaKey::Web3Signer { from_address });
        }
        match secret.map(|n| (&n.value, n.line)) {
            Some((Value::Scalar(text), line)) if !text.trim().is_empty() => {
                self.ecdsa_secret(text, &format!("{AT}.privateKey"), line)
            }
            Some((_, line)) => {
                self.problem(
                    format!("{AT}.privateKey"),
                    format!("expected a hex string (line {line})"),
                );
                None
            }
            None => {
                self.ignore(
                    AT,
                    "no privateKey and no remote signer: the executor had no ECDSA signing key; \
                     none imported",
                );
                None
            }
        }
    }

    /// The address of a hex secp256k1 secret; the secret itself goes no further than here.
    fn ecdsa_secret(&mut self, text: &str, path: &str, line: usize) -> Option<EcdsaKey> {
        let digits = text.trim();
        let digits = digits.strip_prefix("0x").unwrap_or(digits);
        let bytes = zeroize::Zeroizing::new(hex::decode(digits).unwrap_or_default());
        match avsnode_signer::ecdsa::SecretKey::from_bytes(&bytes) {
            Ok(key) => Some(EcdsaKey::Inline {
                address: key.public_key().address(),
            }),
            Err(_) => {
                self.problem(
                    path,
                    format!(
                        "not a secp256k1 private key (64 hex digits, 0x optional, not zero and \
                         below the group order) (line {line})"
                    ),
                );
                None
            }
        }
    }

    fn chain(&mut self, node: &Node) -> Option<(String, u64)> {
        let mut f = self.fields(node, "l1Chain")?;
        let url = self
            .string(f.get("rpcUrl"), "l1Chain.rpcUrl")
            .filter(|u| !u.trim().is_empty());
        if url.is_none() {
            self.problem("l1Chain.rpcUrl", "required");
        }
        let id = match f.get("chainId") {
            Some(node) => self.number::<u64>(Some(node), "l1Chain.chainId", "a chain id"),
            None => {
                self.problem(
                    "l1Chain.chainId",
                    "required (the executor does not start without it)",
                );
                None
            }
        };
        if id == Some(0) {
            self.problem("l1Chain.chainId", "must not be 0");
        }
        self.finish(f);
        Some((url?.trim().to_owned(), id?))
    }

    fn performer(&mut self, node: &Node, at: &str) -> Option<Performer> {
        let mut f = self.fields(node, at)?;
        let avs = match f.get("avsAddress") {
            Some(n) => self.address(Some(n), &format!("{at}.avsAddress")),
            None => {
                self.problem(format!("{at}.avsAddress"), "required");
                None
            }
        };
        let process_type = self.string(f.get("processType"), &format!("{at}.processType"));
        match process_type.as_deref() {
            None | Some("server") => {}
            Some(other) => self.problem(
                format!("{at}.processType"),
                format!(
                    "{other:?}: only \"server\" performers run (the executor refuses any other \
                     type, and avsnode's performers are long-running servers too)"
                ),
            ),
        }
        let kubernetes = match self
            .string(f.get("deploymentMode"), &format!("{at}.deploymentMode"))
            .as_deref()
        {
            None | Some("" | "docker") => false,
            Some("kubernetes") => true,
            Some(other) => {
                self.problem(
                    format!("{at}.deploymentMode"),
                    format!("{other:?}: docker or kubernetes"),
                );
                false
            }
        };
        let image = f.get("image").and_then(|n| {
            let path = format!("{at}.image");
            let mut img = self.fields(n, &path)?;
            let repository = self.string(img.get("repository"), &format!("{path}.repository"));
            let tag = self.string(img.get("tag"), &format!("{path}.tag"));
            self.finish(img);
            match (
                repository.filter(|r| !r.is_empty()),
                tag.filter(|t| !t.is_empty()),
            ) {
                (Some(r), Some(t)) => Some(format!("{r}:{t}")),
                (None, _) => {
                    self.problem(format!("{path}.repository"), "required");
                    None
                }
                (_, None) => {
                    self.problem(format!("{path}.tag"), "required");
                    None
                }
            }
        });
        let mut env: Vec<Env> = Vec::new();
        if let Some(list) = f.get("envs") {
            match &list.value {
                Value::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let path = format!("{at}.envs[{i}]");
                        if let Some(e) = self.env(item, &path, kubernetes) {
                            if env.iter().any(|o| o.name == e.name) {
                                self.problem(
                                    format!("{path}.name"),
                                    format!("{:?} is given twice (line {})", e.name, item.line),
                                );
                            }
                            env.push(e);
                        }
                    }
                }
                _ => self.problem(
                    format!("{at}.envs"),
                    format!(
                        "expected a list, found {} (line {})",
                        list.kind(),
                        list.line
                    ),
                ),
            }
        }
        if f.get("kubernetes").is_some() {
            self.ignore(
                format!("{at}.kubernetes"),
                "not imported: the Kubernetes deployment of the performer is yours; avsnode \
                 reaches it at the remote endpoint",
            );
        }
        self.finish(f);
        Some(Performer {
            avs: avs?,
            image,
            env,
            kubernetes,
            process_type_missing: process_type.is_none(),
        })
    }

    fn env(&mut self, node: &Node, at: &str, kubernetes: bool) -> Option<Env> {
        let mut f = self.fields(node, at)?;
        let name = self
            .string(f.get("name"), &format!("{at}.name"))
            .filter(|n| !n.is_empty());
        if name.is_none() {
            self.problem(format!("{at}.name"), "required");
        }
        let value = self.string(f.get("value"), &format!("{at}.value"));
        let from_env = self
            .string(f.get("valueFromEnv"), &format!("{at}.valueFromEnv"))
            .filter(|v| !v.is_empty());
        if f.get("kubernetesEnv").is_some() {
            self.ignore(
                format!("{at}.kubernetesEnv"),
                if kubernetes {
                    "not imported: Kubernetes secret and config-map references belong to the \
                     performer's own deployment"
                } else {
                    "ignored by the executor for docker performers; not imported"
                },
            );
        }
        self.finish(f);
        Some(Env {
            name: name?,
            // The executor's docker performer: valueFromEnv wins over value.
            value: match from_env {
                Some(var) => EnvValue::FromEnv(var),
                None => EnvValue::Literal(value.unwrap_or_default()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "operator:\n  address: \"0x0000000000000000000000000000000000a11ce1\"\n  \
        operatorPrivateKey:\n    privateKey: \"0x00000000000000000000000000000000000000000000000000000000000c0001\"\n  \
        signingKeys:\n    ecdsa:\n      privateKey: \"0x00000000000000000000000000000000000000000000000000000000000c0002\"\n\
        l1Chain:\n  rpcUrl: \"http://127.0.0.1:38545\"\n  chainId: 31337\n";

    fn problems(text: &str) -> Vec<String> {
        match read(text) {
            Err(ReadError::Invalid(problems)) => problems.iter().map(|p| p.to_string()).collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    fn ecdsa_address(secret_hex: &str) -> Address {
        avsnode_signer::ecdsa::SecretKey::from_bytes(&hex::decode(secret_hex).unwrap())
            .unwrap()
            .public_key()
            .address()
    }

    #[test]
    fn the_fixtures_read() {
        let dir = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/hourglass"
        ));
        for name in [
            "executor-bn254.yaml",
            "executor-ecdsa.yaml",
            "executor-minimal.yaml",
        ] {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            let config = read(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(config.ignored.is_empty(), "{name}: {:?}", config.ignored);
        }
    }

    #[test]
    fn keys_match_in_any_case_and_scalars_are_weakly_typed() {
        let text = MINIMAL
            .replace("operator:", "OPERATOR:")
            .replace("  address:", "  Address:")
            .replace("chainId: 31337", "chainid: \"31337\"")
            + "GRPCPORT: '9000'\n";
        let config = read(&text).unwrap();
        assert_eq!(config.chain_id, 31337);
        assert_eq!(config.grpc_port, Some(9000));
        assert_eq!(
            config.operator.to_string(),
            "0x0000000000000000000000000000000000a11ce1"
        );
        // An unquoted address is text, not a hex integer.
        let text = MINIMAL.replace(
            "\"0x0000000000000000000000000000000000a11ce1\"",
            "0x0000000000000000000000000000000000a11ce1",
        );
        assert_eq!(
            read(&text).unwrap().operator.to_string(),
            "0x0000000000000000000000000000000000a11ce1"
        );
    }

    #[test]
    fn the_inline_ecdsa_key_becomes_its_address_in_either_form() {
        let secret = "00000000000000000000000000000000000000000000000000000000000c0002";
        let config = read(MINIMAL).unwrap();
        let Some(EcdsaKey::Inline { address }) = config.ecdsa else {
            panic!("{config:?}")
        };
        assert_eq!(address, ecdsa_address(secret));
        assert!(config.transaction_key);
        // The legacy string forms of both keys.
        let legacy = MINIMAL
            .replace(
                "operatorPrivateKey:\n    privateKey: \"0x00000000000000000000000000000000000000000000000000000000000c0001\"",
                "operatorPrivateKey: \"0x00000000000000000000000000000000000000000000000000000000000c0001\"",
            )
            .replace(
                "ecdsa:\n      privateKey: \"0x",
                "ecdsa: \"0x",
            );
        assert_ne!(legacy, MINIMAL);
        let config = read(&legacy).unwrap();
        let Some(EcdsaKey::Inline { address }) = config.ecdsa else {
            panic!("{config:?}")
        };
        assert_eq!(address, ecdsa_address(secret));
        // Nothing of the secret in the debug form.
        assert!(!format!("{config:?}").contains("c0002"));
    }

    #[test]
    fn both_spellings_of_the_three_renamed_keys() {
        for (written, remote) in [
            ("remoteSigner: true", true),
            ("useRemoteSigner: true", true),
            ("UseRemoteSigner: false", false),
        ] {
            let text = MINIMAL.replace(
                "ecdsa:\n      privateKey:",
                &format!(
                    "ecdsa:\n      {written}\n      remoteSignerConfig:\n        fromAddress: \"0x00000000000000000000000000000000000000f1\"\n      privateKey:"
                ),
            );
            let config = read(&text).unwrap();
            assert_eq!(
                matches!(config.ecdsa, Some(EcdsaKey::Web3Signer { .. })),
                remote,
                "{written}"
            );
        }
        for written in ["authentication", "authConfig", "AUTHCONFIG"] {
            let text = format!("{MINIMAL}{written}:\n  enabled: true\n");
            assert!(read(&text).unwrap().auth_enabled, "{written}");
        }
        for written in ["badger", "badgerConfig"] {
            let text = format!("{MINIMAL}storage:\n  type: badger\n  {written}:\n    dir: /data\n");
            let config = read(&text).unwrap();
            assert_eq!(config.storage.as_deref(), Some("badger"));
            assert!(config.ignored.is_empty(), "{:?}", config.ignored);
        }
        let both =
            format!("{MINIMAL}authentication:\n  enabled: true\nauthConfig:\n  enabled: true\n");
        assert_eq!(
            problems(&both),
            ["authentication: given twice, as \"authentication\" and as \"authConfig\": keep one"]
        );
    }

    #[test]
    fn ignored_keys_are_reported() {
        let text = format!(
            "{MINIMAL}avss:\n  - 0x1\nworkerCount: 4\ncontracts: \"{{}}\"\nkubernetes:\n  namespace: x\nsurprise: 1\n"
        )
        .replace("  chainId: 31337", "  chainId: 31337\n  wsUrl: ws://x");
        let config = read(&text).unwrap();
        let ignored: Vec<String> = config.ignored.iter().map(|p| p.path.clone()).collect();
        assert_eq!(
            ignored,
            [
                "l1Chain.wsUrl",
                "contracts",
                "kubernetes",
                "avss",
                "workerCount",
                "surprise"
            ]
        );
        assert!(config.ignored[3].message.contains("older Hourglass docs"));
        assert!(config.ignored[5].message.contains("not a field"));
    }

    #[test]
    fn problems_name_the_key_path() {
        let no_address = MINIMAL.replace(
            "  address: \"0x0000000000000000000000000000000000a11ce1\"\n",
            "",
        );
        assert_eq!(problems(&no_address), ["operator.address: required"]);

        let performers = format!(
            "{MINIMAL}avsPerformers:\n  - avsAddress: \"0xa0a0000000000000000000000000000000000001\"\n    processType: server\n    image: {{repository: r, tag: t}}\n  - avsAddress: \"0xa0a0\"\n    processType: one-off\n    envs:\n      - value: x\n"
        );
        assert_eq!(
            problems(&performers),
            [
                "avsPerformers[1].avsAddress: not a 20-byte hex address (0x and 40 hex digits) (line 15)",
                "avsPerformers[1].processType: \"one-off\": only \"server\" performers run (the executor refuses any other type, and avsnode's performers are long-running servers too)",
                "avsPerformers[1].envs[0].name: required",
            ]
        );

        let bad_key = MINIMAL.replace("c0002\"", "zz\"");
        let found = problems(&bad_key);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .starts_with("operator.signingKeys.ecdsa.privateKey: not a secp256k1 private key"),
            "{found:?}"
        );
        let twice = MINIMAL.replace("l1Chain:", "L1CHAIN:\n  rpcUrl: x\nl1Chain:");
        assert!(
            problems(&twice)[0].starts_with("l1Chain: given twice"),
            "{:?}",
            problems(&twice)
        );
        let no_keys = MINIMAL.replace("  signingKeys:\n    ecdsa:\n      privateKey: \"0x00000000000000000000000000000000000000000000000000000000000c0002\"\n", "");
        assert_eq!(
            problems(&no_keys),
            ["operator.signingKeys: required (bls or ecdsa)"]
        );
        let list = MINIMAL.replace("l1Chain:\n", "l1Chain:\n  - 1\nx:\n");
        assert!(
            problems(&list)[0].starts_with("l1Chain: expected a mapping, found a list (line"),
            "{:?}",
            problems(&list)
        );
    }
}
