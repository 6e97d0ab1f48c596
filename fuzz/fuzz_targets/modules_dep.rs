//! `modules.dep`, `modules.builtin`, `/etc/phase/modules.list` and `modules.alias` (initramfs
//! files) through `phase_layout::modules_dep`, as the init's modules stage uses them: parse,
//! resolve the list to a load order, match each alias as a modalias pattern (`fnmatch(3)`).
//!
//! Input: the four files separated by NUL bytes (`dep\0builtin\0list\0alias`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use phase_layout::modules_dep::{parse_modules_alias, parse_modules_list, ModulesDep};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |&b| b == 0);
    // ModulesDep::load and modules::read_list use read_to_string: UTF-8 only.
    let mut next = || std::str::from_utf8(parts.next().unwrap_or_default()).ok();
    let (Some(dep), Some(builtin), Some(list)) = (next(), next(), next().or(Some(""))) else {
        return;
    };
    if let Some(alias) = next() {
        for a in parse_modules_alias(alias) {
            assert!(a.pattern.len() <= 4096 && !a.pattern.contains(char::is_whitespace));
            let _ = phase_init::sys::linux::fnmatch(&a.pattern, "virtio:d00000001v00001AF4");
            let _ = phase_init::sys::linux::fnmatch(&a.pattern, &a.module);
        }
    }
    let Ok(deps) = ModulesDep::parse(dep, builtin) else {
        return;
    };
    let listed = parse_modules_list(list);
    for m in &listed {
        // Parameters reach finit_module joined by spaces: one word each, never a marker.
        for p in &m.params {
            assert!(phase_layout::kconfig::is_module_param(p), "{p:?}");
            assert!(!p.contains(char::is_whitespace) && !p.starts_with('@'), "{p:?}");
        }
    }
    let wanted: Vec<String> = listed.into_iter().map(|m| m.name).collect();
    if let Ok(plan) = deps.resolve(&wanted) {
        for w in &wanted {
            let _ = deps.is_builtin(w);
        }
        // Dependencies first, each module once.
        let mut seen = std::collections::BTreeSet::new();
        for m in &plan.modules {
            assert!(seen.insert(&m.name), "{} twice in {plan:?}", m.name);
        }
    }
});
