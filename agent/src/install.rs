//! `install` / `uninstall`: a hardened systemd service, a commented default config and
//! the state directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::DEFAULT_CONFIG;

/// Where things go; overridable so tests (and packagers) can install into a root.
#[derive(Debug, Clone)]
pub struct Layout {
    pub unit: PathBuf,
    pub config: PathBuf,
    pub state_dir: PathBuf,
    /// The binary as the installed system runs it (the unit's `ExecStart`).
    pub binary: PathBuf,
    /// Where that binary is written (under the root, for a packaging install).
    pub binary_file: PathBuf,
}

/// Where the installed system runs the agent from.
pub const INSTALLED_BINARY: &str = "/usr/bin/vigil-agent";

impl Layout {
    pub fn system() -> Layout {
        Layout {
            unit: PathBuf::from("/etc/systemd/system/vigil-agent.service"),
            config: PathBuf::from("/etc/vigil/agent.toml"),
            state_dir: PathBuf::from("/var/lib/vigil-agent"),
            binary: PathBuf::from(INSTALLED_BINARY),
            binary_file: PathBuf::from(INSTALLED_BINARY),
        }
    }

    pub fn under(root: &Path) -> Layout {
        let sys = Layout::system();
        let rebase = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
        Layout {
            unit: rebase(&sys.unit),
            config: rebase(&sys.config),
            state_dir: rebase(&sys.state_dir),
            binary_file: rebase(&sys.binary),
            binary: sys.binary,
        }
    }
}

/// The unit file: a dedicated dynamic user, a read-only system except the state dir,
/// no privilege gain, only the system calls a service needs; reading logs under /var/log
/// via the `adm` group.
pub fn unit_file(layout: &Layout, config_path: &Path) -> String {
    format!(
        "[Unit]
Description=Vigil agent: ships logs, host metrics and traces to the Vigil collector
Documentation=https://example.invalid/vigil
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={binary} run --config {config}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
User=vigil-agent
Group=vigil-agent
SupplementaryGroups=adm systemd-journal
DynamicUser=yes
StateDirectory=vigil-agent
ReadWritePaths={state}
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
NoNewPrivileges=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictRealtime=yes
ProtectClock=yes
ProtectKernelLogs=yes
ProtectHostname=yes
PrivateMounts=yes
UMask=0077
CapabilityBoundingSet=
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
TimeoutStopSec=30
KillSignal=SIGTERM

[Install]
WantedBy=multi-user.target
",
        binary = layout.binary.display(),
        config = config_path.display(),
        state = layout.state_dir.display(),
    )
}

/// The default config with `collector.endpoint` (and protocol, by port) filled in.
pub fn config_text(collector: Option<&str>, state_dir: &Path) -> anyhow::Result<String> {
    let mut text = DEFAULT_CONFIG.replace(
        "state_dir = \"/var/lib/vigil-agent\"",
        &format!("state_dir = {:?}", state_dir.display().to_string()),
    );
    if let Some(url) = collector {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("--collector {url:?} must start with http:// or https://");
        }
        let protocol = if url.trim_end_matches('/').ends_with(":4318") {
            "http"
        } else {
            "grpc"
        };
        text = text
            .replace("endpoint = \"http://127.0.0.1:4317\"", &format!("endpoint = {url:?}"))
            .replace("protocol = \"grpc\"", &format!("protocol = {protocol:?}"));
    }
    // Whatever we write must load.
    let config = crate::config::Config::from_toml(&text).map_err(|e| anyhow::anyhow!(e))?;
    config.validate()?;
    Ok(text)
}

/// Installs the agent: `source_binary` (the running one) placed at the layout's binary path
/// unless it is already there, the config (0640: it may hold the token), the state dir and
/// the unit.
pub fn install(
    layout: &Layout,
    source_binary: &Path,
    collector: Option<&str>,
    force: bool,
) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(source_binary, &layout.binary_file) {
        if let Some(dir) = layout.binary_file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Through a temporary name and a rename: a running agent keeps its old file.
        let tmp = layout.binary_file.with_extension("new");
        std::fs::copy(source_binary, &tmp)
            .with_context(|| format!("copying {} to {}", source_binary.display(), tmp.display()))?;
        set_mode(&tmp, 0o755)?;
        std::fs::rename(&tmp, &layout.binary_file)
            .with_context(|| format!("placing {}", layout.binary_file.display()))?;
        done.push(format!("binary {}", layout.binary_file.display()));
    }
    std::fs::create_dir_all(&layout.state_dir).with_context(|| format!("creating {}", layout.state_dir.display()))?;
    done.push(format!("state dir {}", layout.state_dir.display()));
    if layout.config.exists() && !force {
        done.push(format!("kept existing config {}", layout.config.display()));
    } else {
        if let Some(dir) = layout.config.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // The state dir in the config is the one systemd gives the service.
        let text = config_text(collector, Path::new("/var/lib/vigil-agent"))?;
        std::fs::write(&layout.config, text).with_context(|| format!("writing {}", layout.config.display()))?;
        set_mode(&layout.config, 0o640)?;
        done.push(format!("config {}", layout.config.display()));
    }
    if let Some(dir) = layout.unit.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let system = Layout::system();
    std::fs::write(&layout.unit, unit_file(&system, &system.config))
        .with_context(|| format!("writing {}", layout.unit.display()))?;
    done.push(format!("systemd unit {}", layout.unit.display()));
    Ok(done)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

pub fn uninstall(layout: &Layout, purge: bool) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    if layout.unit.exists() {
        std::fs::remove_file(&layout.unit).with_context(|| format!("removing {}", layout.unit.display()))?;
        done.push(format!("removed {}", layout.unit.display()));
    }
    if purge {
        for path in [&layout.config] {
            if path.exists() {
                std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
                done.push(format!("removed {}", path.display()));
            }
        }
        if layout.state_dir.exists() {
            std::fs::remove_dir_all(&layout.state_dir)
                .with_context(|| format!("removing {}", layout.state_dir.display()))?;
            done.push(format!("removed {}", layout.state_dir.display()));
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_writes_a_loadable_config_and_a_hardened_unit_and_uninstall_removes_them() {
        let root = tempfile::tempdir().expect("tempdir");
        let layout = Layout::under(root.path());
        let built = root.path().join("build/vigil-agent");
        std::fs::create_dir_all(built.parent().expect("dir")).expect("dir");
        std::fs::write(&built, b"#!/bin/sh\n").expect("binary");
        install(&layout, &built, Some("https://collector.example:4318"), false).expect("install");
        // The binary is placed where the unit runs it from, not referred to where it was built.
        assert_eq!(std::fs::read(&layout.binary_file).expect("placed"), b"#!/bin/sh\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&layout.binary_file), 0o755);
        assert_eq!(mode(&layout.config), 0o640, "the config may hold the token");
        let config = crate::config::Config::from_file(&layout.config).expect("config loads");
        assert_eq!(config.collector.endpoint, "https://collector.example:4318");
        assert_eq!(config.collector.protocol, crate::config::Protocol::Http);
        let unit = std::fs::read_to_string(&layout.unit).expect("unit");
        for line in [
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "Restart=on-failure",
            "ReadWritePaths=/var/lib/vigil-agent",
            "ExecStart=/usr/bin/vigil-agent run --config /etc/vigil/agent.toml",
        ] {
            assert!(unit.lines().any(|l| l == line), "{line} missing");
        }
        // A second install keeps a config the operator edited.
        std::fs::write(&layout.config, "# mine\n").expect("edit");
        install(&layout, &built, None, false).expect("reinstall");
        assert_eq!(std::fs::read_to_string(&layout.config).expect("config"), "# mine\n");
        uninstall(&layout, true).expect("uninstall");
        assert!(!layout.unit.exists() && !layout.config.exists() && !layout.state_dir.exists());
    }

    #[test]
    fn the_packaged_unit_is_the_one_install_writes() {
        // `cargo deb` ships packaging/vigil-agent.service; keep it identical to what
        // `vigil-agent install` writes for /usr/bin. Regenerate it with:
        // VIGIL_WRITE_UNIT=1 cargo test -p vigil-agent the_packaged_unit
        let layout = Layout::system();
        let unit = unit_file(&layout, &layout.config);
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/vigil-agent.service");
        if std::env::var("VIGIL_WRITE_UNIT").is_ok() {
            std::fs::write(&path, &unit).expect("write unit");
        }
        assert_eq!(std::fs::read_to_string(&path).expect("packaged unit"), unit);
    }

    #[test]
    fn a_bad_collector_url_is_refused() {
        let err = config_text(Some("collector:4317"), Path::new("/x"))
            .expect_err("must be refused")
            .to_string();
        assert!(err.contains("--collector"), "{err}");
    }
}
