//! A manifest the index knows but the registry lost behind regkeeper's back (deleted by
//! someone else): the run skips it as gone and the index forgets it, so later plans stop
//! planning it.

use regkeeper::{
    config::{CleanupMode, Config},
    index::{Index, UnixMillis},
};

use crate::{
    cleanup::RULES,
    support::{
        memory_registry::{MemoryRegistry, TagDelete, recorded_push},
        regkeeper::{cli_config, run_cleanup},
    },
};

#[test]
fn an_untagged_manifest_deleted_by_someone_else_is_forgotten() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let registry = runtime.block_on(MemoryRegistry::start(TagDelete::Unsupported));
    let work = tempfile::tempdir().unwrap();
    let rules = RULES.replace(
        "      untracked:\n",
        "      untaggedManifests:\n        maxAge: 0s\n      untracked:\n",
    );
    let config = Config::load(&cli_config(work.path(), &registry.url, &rules)).unwrap();
    let index = std::sync::Arc::new(regkeeper::index::in_memory());
    let long_ago = UnixMillis(UnixMillis::now().0 - 86_400_000);
    // Known to the index as pushed and then untagged (the tag forgotten); never in this registry.
    let lost = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let [manifest, _tag] = recorded_push("team/app", "gone", lost, 500, long_ago);
    index.apply(&[manifest]).unwrap();
    let run = || run_cleanup(&runtime, &config, &index, CleanupMode::Enforce);

    let first = run();
    assert_eq!(first.steps.len(), 1, "{:#?}", first.steps);
    assert_eq!(first.steps[0].outcome.as_str(), "skipped-gone");
    assert!(index.manifest("team/app", lost).unwrap().is_none());
    assert!(
        !registry
            .requests()
            .iter()
            .any(|(method, _)| method == "DELETE"),
        "nothing to delete"
    );
    let second = run();
    assert!(second.steps.is_empty(), "{:#?}", second.steps);
}
