//! The avsnode configuration an executor configuration becomes: each imported section with a
//! comment saying where it came from, and what the operator must still supply or decide marked
//! `# IMPORT TODO:` where it goes. A value to supply is left out (or commented out, or an empty
//! list, or the sentinel [`SENTINEL`]) so that `avsnode check-config` names its key until it is
//! filled in; it is never a plausible value that would validate.

use std::fmt::Write as _;

use avsnode_signing::Problem;

use super::hourglass::{BlsKeystore, EcdsaKey, EnvValue, ExecutorConfig, Performer};

/// What stands for a value to supply where the key cannot be left out.
pub(crate) const SENTINEL: &str = "IMPORT TODO";

/// The mark of a line that needs the operator.
pub(crate) const TODO_MARK: &str = "# IMPORT TODO:";

/// EigenLayer's core contracts on Ethereum mainnet (eigenlayer-contracts' deployment table).
const MAINNET_ALLOCATION_MANAGER: &str = "0x948a420b8CC1d6BFd0B6087C2E7c344a2CD0bc39";
const MAINNET_KEY_REGISTRAR: &str = "0x54f4bC6bDEbe479173a2bbDc31dD7178408A57A4";

/// Hourglass performers listen on this port in their container (not configurable there).
const PERFORMER_PORT: u16 = 8080;

/// The executor's task port when `grpcPort` is absent, as its docs and examples intend.
const DEFAULT_TASK_PORT: u16 = 9090;

/// Where the signers' files go, relative to the configuration.
const BN254_PASSWORD: &str = "keys/bn254.pass";
const BN254_KEYSTORE: &str = "keys/bn254.json";
const ECDSA_KEYSTORE: &str = "keys/ecdsa.json";
const ECDSA_PASSWORD: &str = "keys/ecdsa.pass";

/// What the command knows beyond the executor configuration.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    /// The executor configuration's file name (for the header).
    pub(crate) source: &'a str,
    /// Where the inline BN254 keystore was written, relative to the output; `None`: not written
    /// (the output goes to stdout).
    pub(crate) bn254_keystore: Option<&'a str>,
}

/// The configuration and what it needs.
#[derive(Debug)]
pub(crate) struct Imported {
    pub(crate) toml: String,
    /// Things to supply or decide, each also a `# IMPORT TODO:` line in `toml`.
    pub(crate) todos: Vec<Problem>,
    /// What was not imported, and why (in the file's header).
    pub(crate) notes: Vec<Problem>,
}

/// A TOML string, quoted and escaped.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A TOML key: bare when it can be.
fn key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare { name.to_owned() } else { quote(name) }
}

/// The text being written, and the lists that go with it.
#[derive(Default)]
struct Out {
    text: String,
    todos: Vec<Problem>,
    notes: Vec<Problem>,
}

impl Out {
    fn line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
    }

    /// `key = value`, the value already TOML.
    fn set(&mut self, name: &str, value: &str) {
        let _ = writeln!(self.text, "{} = {value}", key(name));
    }

    /// A comment, wrapped.
    fn comment(&mut self, text: &str) {
        wrap(&mut self.text, "# ", "# ", text);
    }

    /// A thing to supply or decide: one `# IMPORT TODO: key: summary` line (also the line the
    /// command prints), then the details, wrapped; `commands` are written as they are.
    fn todo(&mut self, path: &str, summary: &str, details: &str, commands: &[&str]) {
        let _ = writeln!(self.text, "{TODO_MARK} {path}: {summary}");
        if !details.is_empty() {
            wrap(&mut self.text, "#   ", "#   ", details);
        }
        for command in commands {
            let _ = writeln!(self.text, "#     {command}");
        }
        self.todos.push(Problem {
            path: path.to_owned(),
            message: summary.to_owned(),
        });
    }

    fn note(&mut self, path: &str, text: &str) {
        self.notes.push(Problem {
            path: path.to_owned(),
            message: text.to_owned(),
        });
    }
}

/// Appends `text` as lines of at most 100 characters, the first starting with `first`, the
/// rest with `rest`.
fn wrap(out: &mut String, first: &str, rest: &str, text: &str) {
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > 100 {
            out.push_str(&line);
            out.push('\n');
            line = rest.to_owned();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
}

/// The avsnode configuration for `config`.
pub(crate) fn render(config: &ExecutorConfig, plan: &Plan<'_>) -> Imported {
    let mut out = Out::default();
    for ignored in &config.ignored {
        out.note(&ignored.path, &ignored.message);
    }
    node(&mut out, config);
    let task_port = intake(&mut out, config);
    management(&mut out, config, task_port);
    if let Some(network) = &config.performer_network {
        out.line("");
        out.line("[docker]");
        out.comment(
            "performerNetworkName. avsnode creates this network itself, as a private bridge, and \
             owns it: performers are reached on it at their container port and publish no port on \
             the host. If the name is that of a network other containers use, pick a new one.",
        );
        out.set("network", &quote(network));
    }
    chain(&mut out, config);
    let signers = signers(&mut out, config, plan);
    if config.performers.is_empty() {
        avs_template(&mut out, &signers);
    }
    for (i, performer) in config.performers.iter().enumerate() {
        avs(&mut out, config, i, performer, &signers);
    }

    let mut toml = String::new();
    wrap(
        &mut toml,
        "# ",
        "# ",
        &format!(
            "avsnode configuration, imported from the Hourglass executor config {:?} by `avsnode \
             import hourglass-config`. deploy/avsnode.example.toml documents every field; \
             relative paths are relative to this file's folder.",
            plan.source
        ),
    );
    toml.push_str("#\n");
    wrap(
        &mut toml,
        "# ",
        "# ",
        &format!(
            "{} to supply or decide, each on a line starting {TODO_MARK:?} below. `avsnode \
             check-config FILE` fails until every value to supply is filled in.",
            things(out.todos.len())
        ),
    );
    if !out.notes.is_empty() {
        toml.push_str("#\n");
    }
    for note in &out.notes {
        wrap(
            &mut toml,
            "# IMPORT NOTE: ",
            "#   ",
            &format!("{}: {}", note.path, note.message),
        );
    }
    toml.push('\n');
    toml.push_str(&out.text);
    Imported {
        toml,
        todos: out.todos,
        notes: out.notes,
    }
}

/// "1 thing", "5 things".
pub(crate) fn things(n: usize) -> String {
    if n == 1 {
        "1 thing".into()
    } else {
        format!("{n} things")
    }
}

fn node(out: &mut Out, config: &ExecutorConfig) {
    out.line("[node]");
    out.comment(
        "operator.address: every task must be addressed to it, and it is signed into every result.",
    );
    out.set("operator_address", &quote(&config.operator.to_string()));
    out.comment(
        "The sign-once ledger: avsnode's record of every result it signed, so that a task is \
         never signed twice with different outputs. Keep it across restarts and upgrades. This is \
         the usual place (the systemd unit's state directory); AVSNODE_DATA_DIR overrides it.",
    );
    out.set("data_dir", &quote("/var/lib/avsnode"));
    if let Some(kind) = &config.storage {
        out.note(
            "storage",
            &format!(
                "not imported: the executor's {kind} store of performer state and processed task \
                 ids; avsnode keeps its own sign-once ledger in node.data_dir"
            ),
        );
    }
    if config.debug {
        out.note(
            "debug",
            "not imported: run avsnode with --log-level debug (or AVSNODE_LOG=debug)",
        );
    }
    if config.transaction_key {
        out.note(
            "operator.operatorPrivateKey",
            "not imported: avsnode sends no transactions, so it needs no transaction key; the key \
             is not copied anywhere",
        );
    }
}

/// `[intake]`; the task port.
fn intake(out: &mut Out, config: &ExecutorConfig) -> u16 {
    out.line("");
    out.line("[intake]");
    out.comment(
        "grpcPort: the task server the aggregators dial (Hourglass's ExecutorService, served as \
         the executor served it, beside avsnode's TaskStream and gRPC health).",
    );
    let port = match config.grpc_port {
        Some(port) => port,
        None => {
            out.todo(
                "intake.listen",
                &format!(
                    "grpcPort is absent (the executor then listened on a random port): \
                     {DEFAULT_TASK_PORT} chosen; make sure it is the port your aggregators dial"
                ),
                "The executor's docs and examples use 9090 as the default, but the executor \
                 binary does not apply it: without grpcPort it bound an ephemeral port.",
                &[],
            );
            DEFAULT_TASK_PORT
        }
    };
    out.set("listen", &quote(&format!("0.0.0.0:{port}")));
    port
}

fn management(out: &mut Out, config: &ExecutorConfig, task_port: u16) {
    out.line("");
    out.line("[management]");
    out.comment(
        "managementServerGrpcPort: Hourglass's ExecutorManagementService (DeployArtifact, \
         ListPerformers, RemovePerformer), what hgctl and `avsnode performer` call. Plaintext, as \
         the executor served it: listen on 127.0.0.1 instead if deploys come from this host only, \
         or add [management.tls].",
    );
    let port = match config.management_port {
        Some(port) if port != task_port => port,
        _ => {
            let port = if task_port == u16::MAX {
                task_port - 1
            } else {
                task_port + 1
            };
            out.todo(
                "management.listen",
                &format!(
                    "the executor served its management API on the task port {task_port}; \
                     avsnode serves it on a port of its own: {port} chosen; point your deploy \
                     tooling at it"
                ),
                "",
                &[],
            );
            port
        }
    };
    out.set("listen", &quote(&format!("0.0.0.0:{port}")));
    out.comment(
        "Every call must carry a single-use challenge signed by one of the admin keys below.",
    );
    out.set("require_auth", "true");
    if !config.auth_enabled {
        out.note(
            "authentication.enabled",
            "off in the executor config: its management API took calls from anyone who reached \
             the port; avsnode's takes calls signed by an admin key (management.admins) only",
        );
    }
    match &config.ecdsa {
        Some(EcdsaKey::Inline { address }) => {
            out.todo(
                "management.admins",
                "the address of the operator's ECDSA signing key, the key the executor checked \
                 management calls against: keep it, or list a dedicated admin key instead \
                 (recommended)",
                "With this one, sign calls with the signer's keystore: `avsnode performer … \
                 --admin-key keys/ecdsa.json --password-file keys/ecdsa.pass`. A dedicated admin \
                 key (its address is printed):",
                &["avsnode keys generate --scheme ecdsa --out admin.json --password-file admin.pass"],
            );
            out.set("admins", &format!("[{}]", quote(&address.to_string())));
        }
        _ => {
            out.todo(
                "management.admins",
                "list the ECDSA admin key(s) allowed to deploy performers",
                "The executor checked management calls against the operator's signing key; \
                 avsnode's admin keys are ECDSA keys of their own. Create one (its address is \
                 printed) and put its address here:",
                &["avsnode keys generate --scheme ecdsa --out admin.json --password-file admin.pass"],
            );
            out.set("admins", "[]");
        }
    }
}

fn chain(out: &mut Out, config: &ExecutorConfig) {
    out.line("");
    out.line("[chain]");
    out.comment(
        "l1Chain. The executor read the aggregators' keys, operator sets and curve types from \
         this chain at every task; avsnode reads the same facts, caches them and follows the \
         chain's events. The URL is copied as it is and may hold an API key: avsnode never logs \
         it; keep this file private (chmod 600).",
    );
    out.set("rpc_urls", &format!("[{}]", quote(&config.rpc_url)));
    let http = config.rpc_url.starts_with("http://") || config.rpc_url.starts_with("https://");
    if !http {
        out.todo(
            "chain.rpc_urls",
            "the executor's RPC URL is not http:// or https://: give an HTTP endpoint of the \
             same chain (avsnode reads over HTTP)",
            "",
            &[],
        );
    }
    out.set("chain_id", &config.chain_id.to_string());
    if config.chain_id == 1 {
        out.comment("EigenLayer's mainnet deployment.");
        out.set("allocation_manager", &quote(MAINNET_ALLOCATION_MANAGER));
        out.set("key_registrar", &quote(MAINNET_KEY_REGISTRAR));
    } else {
        out.todo(
            "chain.allocation_manager, chain.key_registrar",
            &format!(
                "EigenLayer's AllocationManager and KeyRegistrar addresses on chain {}",
                config.chain_id
            ),
            "From the deployment table of eigenlayer-contracts for that chain (the executor \
             carried them built in).",
            &[],
        );
        out.set("allocation_manager", &quote(SENTINEL));
        out.set("key_registrar", &quote(SENTINEL));
    }
}

/// Which signers were written (named "bn254" and "ecdsa").
struct Signers {
    bn254: bool,
    ecdsa: bool,
}

fn signers(out: &mut Out, config: &ExecutorConfig, plan: &Plan<'_>) -> Signers {
    let mut index = 0;
    if let Some(bls) = &config.bls {
        let at = format!("signer[{index}]");
        index += 1;
        out.line("");
        out.line("[[signer]]");
        out.comment(
            "operator.signingKeys.bls: the BN254 key that signs results for BN254 operator sets.",
        );
        out.set("name", &quote("bn254"));
        out.set("scheme", &quote("bn254"));
        match (&bls.keystore, plan.bn254_keystore) {
            (BlsKeystore::File(path), _) => {
                out.comment(
                    "keystoreFile, as the executor read it (avsnode reads Hourglass BN254 \
                     keystores as they are). If the executor ran in a container, this is a path \
                     inside it: point keystore at the file on this host. It must not be readable \
                     by group or other (chmod 600).",
                );
                out.set("keystore", &quote(path));
            }
            (BlsKeystore::Inline(_), Some(written)) => {
                out.comment(
                    "operator.signingKeys.bls.keystore, the keystore JSON (encrypted), written \
                     beside this file (mode 0600).",
                );
                out.set("keystore", &quote(written));
            }
            (BlsKeystore::Inline(_), None) => {
                out.todo(
                    &format!("{at}.keystore"),
                    &format!(
                        "save the keystore JSON of operator.signingKeys.bls.keystore to \
                         {BN254_KEYSTORE} (chmod 600), then uncomment keystore (or import with \
                         --out, which writes it)"
                    ),
                    "",
                    &[],
                );
                out.line(&format!("# keystore = {}", quote(BN254_KEYSTORE)));
            }
        }
        let given = if bls.password_given {
            " (operator.signingKeys.bls.password)"
        } else {
            ""
        };
        out.todo(
            &format!("{at}.password_file"),
            &format!(
                "write the BN254 keystore's password{given} to {BN254_PASSWORD} (chmod 600), \
                 then uncomment password_file"
            ),
            "The password is not copied from the executor config: avsnode reads passwords from \
             files only. From this file's folder (type the password, then Ctrl-D):",
            &[&format!(
                "(umask 077 && mkdir -p keys && cat > {BN254_PASSWORD})"
            )],
        );
        out.line(&format!("# password_file = {}", quote(BN254_PASSWORD)));
    }
    if let Some(ecdsa) = &config.ecdsa {
        let at = format!("signer[{index}]");
        out.line("");
        out.line("[[signer]]");
        match ecdsa {
            EcdsaKey::Inline { address } => {
                out.comment(&format!(
                    "operator.signingKeys.ecdsa: the ECDSA key that signs results for ECDSA \
                     operator sets (address {address}). The executor took it as a hex key in its \
                     config; avsnode takes keys from encrypted keystores only, so it is not \
                     copied here."
                ));
                out.set("name", &quote("ecdsa"));
                out.set("scheme", &quote("ecdsa"));
                out.set("keystore", &quote(ECDSA_KEYSTORE));
                out.todo(
                    &format!("{at}.password_file"),
                    &format!(
                        "create {ECDSA_KEYSTORE} from the executor's ECDSA signing key (address \
                         {address}), then uncomment password_file"
                    ),
                    &format!(
                        "From this file's folder, the key's hex \
                         (operator.signingKeys.ecdsa.privateKey) going through a file, never a \
                         command line; `keys import` prints the address, which must be {address}:"
                    ),
                    &[
                        &format!(
                            "(umask 077 && mkdir -p keys && cat > {ECDSA_PASSWORD})   # a new password, then Ctrl-D"
                        ),
                        "(umask 077 && cat > keys/ecdsa.hex)   # paste the hex key, then Ctrl-D",
                        &format!(
                            "avsnode keys import --scheme ecdsa --secret-file keys/ecdsa.hex --out {ECDSA_KEYSTORE} --password-file {ECDSA_PASSWORD}"
                        ),
                        "shred -u keys/ecdsa.hex",
                    ],
                );
                out.line(&format!("# password_file = {}", quote(ECDSA_PASSWORD)));
            }
            EcdsaKey::Web3Signer { from_address } => {
                let named = from_address
                    .as_deref()
                    .map(|a| format!(" (as {a})"))
                    .unwrap_or_default();
                out.comment(
                    "operator.signingKeys.ecdsa: the ECDSA key that signs results for ECDSA \
                     operator sets, held by a Web3Signer.",
                );
                out.set("name", &quote("ecdsa"));
                out.set("scheme", &quote("ecdsa"));
                out.todo(
                    &at,
                    &format!(
                        "the ECDSA signing key is in a Web3Signer{named}, which avsnode cannot \
                         use: give this signer a keystore, a PKCS#11 token or avsnode's remote \
                         signer"
                    ),
                    "keystore + password_file: an encrypted key file (`avsnode keys import`); \
                     pkcs11 = { module, token_label, key_label, pin_file }: a key on an HSM \
                     (`avsnode keys hsm-generate`); remote = { url, ca, cert, key }: `avsnode \
                     signer serve` on another host, over mutual TLS. docs/OPERATING.md, \
                     \"Signing backends\".",
                    &[],
                );
            }
        }
    }
    Signers {
        bn254: config.bls.is_some(),
        ecdsa: config.ecdsa.is_some(),
    }
}

/// An `operator_sets` entry per signer, for the comments.
fn set_examples(signers: &Signers) -> Vec<String> {
    let mut examples = Vec::new();
    if signers.bn254 {
        examples.push("{ id = <ID>, signer = \"bn254\" }".to_owned());
    }
    if signers.ecdsa {
        examples.push(
            "{ id = <ID>, signer = \"ecdsa\", verifier = \"<ECDSACertificateVerifier address>\" }"
                .to_owned(),
        );
    }
    examples
}

fn avs(out: &mut Out, config: &ExecutorConfig, i: usize, performer: &Performer, signers: &Signers) {
    let at = format!("avs[{i}]");
    let from = format!("avsPerformers[{i}]");
    out.line("");
    out.line("[[avs]]");
    out.comment(&format!("{from}.avsAddress."));
    out.set("address", &quote(&performer.avs.to_string()));
    out.comment(
        "The executor checked each task's aggregator against the AVS's aggregator operator set on \
         chain; so does avsnode, with the keys it reads through [chain].",
    );
    out.set("aggregators", &quote("from_chain"));
    let examples = set_examples(signers);
    let mut commands: Vec<String> = examples
        .iter()
        .map(|e| format!("operator_sets = [{e}]"))
        .collect();
    commands.push(format!(
        "cast call <allocation_manager> \"getRegisteredSets(address)((address,uint32)[])\" {}",
        config.operator
    ));
    commands.push(format!(
        "cast call <key_registrar> \"getOperatorSetCurveType((address,uint32))(uint8)\" \"({},<ID>)\"",
        performer.avs
    ));
    out.todo(
        &format!("{at}.operator_sets"),
        &format!(
            "the operator sets of AVS {} this operator signs for, each with its signer",
            performer.avs
        ),
        "The executor learned each task's operator set from chain; avsnode signs for the sets \
         listed here only. An ECDSA set also names the chain's ECDSACertificateVerifier \
         (eigenlayer-contracts' deployment table). The sets this operator is registered in are \
         those of this AVS among getRegisteredSets; each set's curve type is 1 for ECDSA, 2 for \
         BN254:",
        &commands.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    out.set("operator_sets", "[]");
    if performer.process_type_missing {
        out.note(
            &format!("{from}.processType"),
            "absent (the executor refuses to start such a performer); imported as a server \
             performer, the only kind there is",
        );
    }

    out.line("");
    out.line("[avs.performer]");
    if performer.kubernetes {
        out.comment(&format!(
            "{from}.deploymentMode: kubernetes. avsnode does not create Kubernetes performers: \
             it calls the performer where it runs (its Service) and checks its health."
        ));
        out.set("runtime", &quote("remote"));
        out.todo(
            &format!("{at}.performer.endpoint"),
            &format!(
                "the http://HOST:PORT where avsnode reaches this AVS's performer (its Kubernetes \
                 Service; the performer listens on {PERFORMER_PORT})"
            ),
            "",
            &[],
        );
        out.set("endpoint", &quote(SENTINEL));
        if let Some(image) = &performer.image {
            out.comment(&format!(
                "The image the executor deployed there: {image}. Its deployment and environment \
                 are yours to keep running."
            ));
        }
        if !performer.env.is_empty() {
            out.note(
                &format!("{from}.envs"),
                "not imported: a remote performer's environment is that of its own deployment",
            );
        }
        return;
    }
    out.comment(&format!(
        "{from}: a docker performer, run hardened (read-only root filesystem, no capabilities, \
         resource limits: deploy/avsnode.example.toml). A deploy through the management API \
         replaces the image until the next deploy."
    ));
    out.set("runtime", &quote("docker"));
    match &performer.image {
        Some(image) => {
            out.comment("image.repository:image.tag.");
            out.set("image", &quote(image));
        }
        None => {
            out.comment(
                "No image: the AVS has no performer until one is deployed (`avsnode performer \
                 deploy`, or DeployArtifact from the Hourglass tooling).",
            );
            out.note(
                &format!("{from}.image"),
                "absent: the AVS has no performer until one is deployed through the management API",
            );
        }
    }
    out.comment("Hourglass performers listen on this port in their container.");
    out.set("port", &PERFORMER_PORT.to_string());
    if performer.env.is_empty() {
        return;
    }
    out.line("");
    out.line("[avs.performer.env]");
    out.comment(&format!(
        "{from}.envs: passed to the container when it is created; never logged."
    ));
    for env in &performer.env {
        if let Err(why) = avsnode_performer::check_env_name(&env.name) {
            out.todo(
                &format!("{at}.performer.env"),
                &format!("{why}: rename it or leave it out"),
                "",
                &[],
            );
        }
        match &env.value {
            EnvValue::Literal(value) => out.set(&env.name, &quote(value)),
            EnvValue::FromEnv(var) => {
                out.todo(
                    &format!("{at}.performer.env.{}", env.name),
                    &format!(
                        "the executor set it from its own environment variable {var} \
                         (valueFromEnv); avsnode's env holds values: write the value here, or \
                         pass it at deploy time"
                    ),
                    &format!(
                        "Here: uncomment the line below with the value (and keep this file chmod \
                         600). At deploy time: list {var} in [management] env_from_node and pass \
                         it by name in the DeployArtifact (value_from_env), or from the deploying \
                         shell's environment:"
                    ),
                    &[&format!(
                        "avsnode performer deploy … --env-from-env {}={var}",
                        env.name
                    )],
                );
                out.line(&format!("# {} = \"…\"", key(&env.name)));
            }
        }
    }
}

/// No `avsPerformers`: a commented `[[avs]]` to copy once per AVS.
fn avs_template(out: &mut Out, signers: &Signers) {
    out.line("");
    out.todo(
        "avs",
        "no avsPerformers (performers came through the management API), but avsnode needs an \
         [[avs]] table per AVS even so: uncomment the template below once per AVS and fill it in",
        "Each AVS's address, and the operator sets it signs for, each with its signer (an ECDSA \
         set also names the chain's ECDSACertificateVerifier). Leave image out to wait for a \
         deploy (`avsnode performer deploy`, or DeployArtifact from the Hourglass tooling).",
        &[],
    );
    out.line("# [[avs]]");
    out.line("# address = \"<AVS address>\"");
    out.line("# aggregators = \"from_chain\"");
    out.line(&format!(
        "# operator_sets = [{}]",
        set_examples(signers).join(", ")
    ));
    out.line("#");
    out.line("# [avs.performer]");
    out.line("# runtime = \"docker\"");
    out.line(&format!("# port = {PERFORMER_PORT}"));
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use avsnode::config::{Config, ConfigError, PerformerConfig};

    use super::super::hourglass;
    use super::*;

    /// The fixtures, the secrets in each, and the keys `check-config` names in the raw output.
    const FIXTURES: [(&str, &[&str], &[&str]); 4] = [
        (
            "executor-bn254.yaml",
            &[
                "000000000000000000000000000000000000000000000000000b0001",
                "test-password-1",
            ],
            &[
                "chain.allocation_manager",
                "chain.key_registrar",
                "management.admins",
                "signer[0]",
                "avs[0].operator_sets",
            ],
        ),
        (
            "executor-ecdsa.yaml",
            &[
                "0000000000000000000000000000000000000000000000000000000e0001",
                "0000000000000000000000000000000000000000000000000000000e0002",
            ],
            &[
                "chain.allocation_manager",
                "chain.key_registrar",
                "signer[0]",
                "avs[0].operator_sets",
                "avs[1].operator_sets",
            ],
        ),
        (
            "executor-minimal.yaml",
            &[
                "0000000000000000000000000000000000000000000000000000000c0001",
                "0000000000000000000000000000000000000000000000000000000c0002",
            ],
            &[
                "chain.allocation_manager",
                "chain.key_registrar",
                "signer[0]",
                "avs",
            ],
        ),
        (
            "executor-legacy.yaml",
            &[
                "0000000000000000000000000000000000000000000000000000000d0001",
                "0000000000000000000000000000000000000000000000000000000d0002",
                "test-password-4",
            ],
            &[
                "chain.allocation_manager",
                "chain.key_registrar",
                "signer[0]",
                "signer[1]",
                "avs[0].operator_sets",
                "avs[0].performer.endpoint",
            ],
        ),
    ];

    fn fixture(name: &str) -> String {
        let dir = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/hourglass"
        ));
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    fn import(text: &str) -> Imported {
        let config = hourglass::read(text).unwrap();
        render(
            &config,
            &Plan {
                source: "executor.yaml",
                bn254_keystore: Some("avsnode.bn254.json"),
            },
        )
    }

    /// The key paths `check-config` reports for `toml`.
    fn check(toml: &str) -> Vec<String> {
        match Config::from_toml(toml, Path::new("/etc/avsnode/avsnode.toml"), |_| None) {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.into_iter().map(|p| p.path).collect()
            }
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn every_value_to_supply_fails_check_config_by_its_key() {
        for (name, _, expected) in FIXTURES {
            let imported = import(&fixture(name));
            assert_eq!(
                check(&imported.toml),
                expected,
                "{name}:\n{}",
                imported.toml
            );
            // Each TODO is one marked line of the file.
            let marked: Vec<&str> = imported
                .toml
                .lines()
                .filter(|l| l.starts_with(TODO_MARK))
                .collect();
            assert_eq!(marked.len(), imported.todos.len(), "{name}");
            for (line, todo) in marked.iter().zip(&imported.todos) {
                assert_eq!(*line, format!("{TODO_MARK} {todo}"), "{name}");
            }
            assert!(
                imported
                    .toml
                    .contains(&format!("# {} to supply or decide", things(marked.len()))),
                "{name}"
            );
        }
    }

    #[test]
    fn secrets_are_never_written() {
        for (name, secrets, _) in FIXTURES {
            let text = fixture(name);
            let imported = import(&text);
            let said = format!("{imported:?}");
            for secret in secrets {
                assert!(text.contains(secret), "{name}: the test's secret {secret}");
                assert!(!said.contains(secret), "{name} shows {secret}:\n{said}");
            }
        }
    }

    #[test]
    fn mainnet_gets_the_core_contracts_and_filled_in_values_validate() {
        let text = fixture("executor-bn254.yaml").replace("chainId: 11155111", "chainId: 1");
        let toml = import(&text).toml;
        assert!(toml.contains(&format!(
            "allocation_manager = \"{MAINNET_ALLOCATION_MANAGER}\""
        )));
        assert!(toml.contains(&format!("key_registrar = \"{MAINNET_KEY_REGISTRAR}\"")));
        let filled = toml
            .replace(
                "admins = []",
                "admins = [\"0x00000000000000000000000000000000000000ad\"]",
            )
            .replace("# password_file", "password_file")
            .replace(
                "operator_sets = []",
                "operator_sets = [{ id = 1, signer = \"bn254\" }]",
            );
        let config = Config::from_toml(&filled, Path::new("/etc/avsnode/avsnode.toml"), |_| None)
            .unwrap_or_else(|e| panic!("{e}\n{filled}"));
        let PerformerConfig::Docker(docker) = &config.avs[0].performer else {
            panic!("a docker performer")
        };
        assert_eq!(
            docker.image.as_deref(),
            Some("registry.example.test/acme/price-performer:v1.4.2")
        );
        assert_eq!(docker.port, 8080);
        assert_eq!(docker.env["LOG_LEVEL"], "info");
        assert!(!docker.env.contains_key("PRICE_API_TOKEN"));
        assert_eq!(config.intake.listen.port(), 9290);
        assert_eq!(config.management.unwrap().listen.port(), 9291);
        assert_eq!(
            config.docker.network.as_deref(),
            Some("avsnode-fixture-net")
        );
    }

    #[test]
    fn env_names_and_values_are_quoted() {
        let value = "a \"quoted\" \\ value\nwith 'two' lines";
        let text = fixture("executor-bn254.yaml").replace(
            "      - name: \"LOG_LEVEL\"\n        value: \"info\"",
            &format!(
                "      - name: \"LOG.LEVEL\"\n        value: {}",
                serde_json::to_string(value).unwrap()
            ),
        );
        let toml = import(&text).toml;
        let table: toml::Table = toml::from_str(&toml).unwrap();
        let env = &table["avs"][0]["performer"]["env"];
        assert_eq!(env["LOG.LEVEL"].as_str(), Some(value), "{toml}");
        // A name avsnode would not pass is a TODO, and check-config names it.
        assert!(
            check(&toml).contains(&"avs[0].performer.env".to_owned()),
            "{toml}"
        );
        assert!(
            import(&text)
                .todos
                .iter()
                .any(|t| t.path == "avs[0].performer.env")
        );
    }

    #[test]
    fn an_inline_keystore_without_a_file_to_go_beside_is_a_todo() {
        let config = hourglass::read(&fixture("executor-legacy.yaml")).unwrap();
        let imported = render(
            &config,
            &Plan {
                source: "executor.yaml",
                bn254_keystore: None,
            },
        );
        assert!(
            imported
                .todos
                .iter()
                .any(|t| t.path == "signer[0].keystore")
        );
        assert!(
            imported
                .toml
                .contains("\n# keystore = \"keys/bn254.json\"\n")
        );
        assert!(check(&imported.toml).contains(&"signer[0]".to_owned()));
    }

    #[test]
    fn a_web3signer_key_leaves_the_signer_without_a_backend() {
        let text = fixture("executor-ecdsa.yaml").replace(
            "    ecdsa:\n      privateKey: \"0x00000000000000000000000000000000000000000000000000000000000e0002\"",
            "    ecdsa:\n      useRemoteSigner: true\n      remoteSignerConfig:\n        url: \"https://user:pw@web3signer.test\"\n        fromAddress: \"0x00000000000000000000000000000000000000f1\"\n        key: \"-----BEGIN PRIVATE KEY-----\"",
        );
        let imported = import(&text);
        let said = format!("{imported:?}");
        assert!(
            !said.contains("web3signer.test") && !said.contains("PRIVATE KEY"),
            "{said}"
        );
        assert!(
            imported.todos.iter().any(|t| t.path == "signer[0]"
                && t.message
                    .contains("Web3Signer (as 0x00000000000000000000000000000000000000f1)")),
            "{:?}",
            imported.todos
        );
        // No inline key: no admin to derive.
        assert!(imported.toml.contains("\nadmins = []\n"));
        let found = check(&imported.toml);
        assert!(
            found.contains(&"signer[0]".to_owned())
                && found.contains(&"management.admins".to_owned()),
            "{found:?}"
        );
    }
}
