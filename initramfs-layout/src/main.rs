//! `phase-layout`: the build tool behind `make initramfs`, `make rootfs`, `make kernel` and
//! `make check-kernel-config` (issue 8). A thin CLI over the `phase_layout` library.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use phase_layout::kconfig;
use phase_layout::layout::Layout;
use phase_layout::plan::{KernelModules, Plan};

#[derive(Parser)]
#[command(
    name = "phase-layout",
    version,
    about = "Build the Phase Boot initramfs and rootfs from declarative layouts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct LayoutArgs {
    /// Layout file (initramfs-layout/initramfs.toml or rootfs.toml).
    #[arg(long)]
    layout: PathBuf,
    /// Variable for `${name}` in the layout, as NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Kernel version whose modules the layout carries (a directory under --modules-root).
    #[arg(long)]
    kver: Option<String>,
    /// Directory holding `<kver>/modules.dep`.
    #[arg(long, default_value = "/lib/modules")]
    modules_root: PathBuf,
    /// Leave out the layout's `[modules]` (a kernel with everything built in, `make kernel`).
    #[arg(long, conflicts_with = "kver")]
    no_modules: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Write the layout as a reproducible newc cpio archive (uncompressed).
    Initramfs {
        #[command(flatten)]
        layout: LayoutArgs,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print what the layout resolves to, one sorted line per entry.
    List {
        #[command(flatten)]
        layout: LayoutArgs,
        /// Print only the archive paths (as `cpio -t` does).
        #[arg(long)]
        names: bool,
    },
    /// Populate a directory from the layout, for mksquashfs.
    RootfsTree {
        #[command(flatten)]
        layout: LayoutArgs,
        /// Output directory (absent or empty).
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a kernel config against kernel-config/phase.config and modules.list.
    CheckKernelConfig {
        /// The kernel .config (e.g. /boot/config-6.1.0-56-amd64).
        #[arg(long)]
        config: PathBuf,
        /// The fragment.
        #[arg(long, default_value = "kernel-config/phase.config")]
        fragment: PathBuf,
        /// The module list.
        #[arg(long, default_value = "kernel-config/modules.list")]
        modules: PathBuf,
        /// Require every fragment option to have exactly its value (after `make olddefconfig`).
        #[arg(long)]
        exact: bool,
    },
}

fn parse_vars(vars: &[String]) -> Result<BTreeMap<String, String>> {
    vars.iter()
        .map(|v| match v.split_once('=') {
            Some((k, val)) if !k.is_empty() => Ok((k.to_owned(), val.to_owned())),
            _ => bail!("--var {v:?}: expected NAME=VALUE"),
        })
        .collect()
}

fn resolve(args: &LayoutArgs) -> Result<Plan> {
    let vars = parse_vars(&args.vars)?;
    let mut layout = Layout::load(&args.layout, &vars)?;
    if args.no_modules {
        layout.modules = None;
    }
    let modules = args.kver.as_ref().map(|kver| KernelModules {
        kver: kver.clone(),
        root: args.modules_root.clone(),
    });
    let plan = Plan::resolve(&layout, modules.as_ref())?;
    for (path, source) in &plan.skipped {
        eprintln!(
            "phase-layout: optional {path} skipped: {} not found",
            source.display()
        );
    }
    Ok(plan)
}

fn write_atomically(out: &Path, plan: &Plan) -> Result<()> {
    let tmp = out.with_extension("tmp");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut file = plan.write_cpio(std::io::BufWriter::new(file))?;
    file.flush()
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    Ok(())
}

fn check_kernel_config(
    config: &Path,
    fragment: &Path,
    modules: &Path,
    exact: bool,
) -> Result<bool> {
    let cfg = kconfig::load_config(config)?;
    let frag = kconfig::load_fragment(fragment)?;
    if exact {
        let bad = kconfig::check_exact(&cfg, &frag);
        for m in &bad {
            println!(
                "MISMATCH {}: wanted {} got {}",
                m.name,
                m.wanted,
                m.got.as_deref().unwrap_or("(absent)")
            );
        }
        println!(
            "{}: {}",
            config.display(),
            if bad.is_empty() {
                "all fragment options present"
            } else {
                "fragment options did not survive"
            }
        );
        return Ok(bad.is_empty());
    }
    let list = kconfig::load_modules_list(modules)?;
    let r = kconfig::check_distro(&cfg, &frag, &list);
    for o in &r.missing_required {
        println!("MISSING {o} (required)");
    }
    for o in &r.modular_unlisted {
        println!(
            "MODULE-NOT-LISTED {o} is =m but no line of {} provides it",
            modules.display()
        );
    }
    for o in &r.missing_recommended {
        println!("WARNING {o} is not set (recommended)");
    }
    println!("modules: {}", r.modules.join(" "));
    println!("builtin: {}", r.builtin.join(" "));
    println!(
        "{}: {}",
        config.display(),
        if r.usable() { "usable" } else { "unusable" }
    );
    Ok(r.usable())
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Initramfs { layout, out } => {
            let plan = resolve(&layout)?;
            write_atomically(&out, &plan)?;
            eprintln!(
                "phase-layout: wrote {} ({} entries)",
                out.display(),
                plan.entries.len() - 1
            );
        }
        Command::List { layout, names } => {
            let plan = resolve(&layout)?;
            let mut stdout = std::io::stdout().lock();
            if names {
                for p in plan.entries.keys().filter(|p| p.as_str() != "/") {
                    writeln!(stdout, "{}", &p[1..])?;
                }
            } else {
                for line in plan.listing() {
                    writeln!(stdout, "{line}")?;
                }
            }
        }
        Command::RootfsTree { layout, out } => {
            let plan = resolve(&layout)?;
            plan.write_tree(&out)?;
            eprintln!(
                "phase-layout: populated {} ({} entries)",
                out.display(),
                plan.entries.len() - 1
            );
        }
        Command::CheckKernelConfig {
            config,
            fragment,
            modules,
            exact,
        } => {
            if !check_kernel_config(&config, &fragment, &modules, exact)? {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
