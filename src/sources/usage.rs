//! Collects [`Usage`] for the plan: every configured cluster's workload images and Helm
//! release images, resolved to this registry's repositories. A cluster that cannot be read is
//! reported unavailable (fail closed), never skipped silently.

use std::time::Duration;

use super::{helm, images::ImageMatcher, kube};
use crate::{
    config::RetentionConfig,
    policy::{InUse, Usage},
};

/// One cluster's listing must finish within this, or the cluster counts as unavailable.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(120);

pub async fn collect(retention: &RetentionConfig) -> Usage {
    let matcher = ImageMatcher::new(&retention.kubernetes.registry_hosts);
    let mut usage = Usage::default();
    for cluster in &retention.kubernetes.clusters {
        let name = &cluster.name;
        let client = match tokio::time::timeout(CLUSTER_DEADLINE, kube::client(cluster)).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                tracing::error!(cluster = name, %error, "kubernetes client cannot be built; keeping everything");
                usage
                    .kubernetes_unavailable
                    .push(format!("{name}: {error}"));
                continue;
            }
            Err(_) => {
                usage
                    .kubernetes_unavailable
                    .push(format!("{name}: no answer within {CLUSTER_DEADLINE:?}"));
                continue;
            }
        };
        let listed = tokio::time::timeout(
            CLUSTER_DEADLINE,
            kube::workload_images(&client, &cluster.namespaces),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no complete listing within {CLUSTER_DEADLINE:?}")));
        match listed {
            Ok(images) => usage.kubernetes.extend(resolve(&matcher, images)),
            Err(error) => {
                tracing::error!(cluster = name, %error, "kubernetes listing failed; keeping everything");
                usage
                    .kubernetes_unavailable
                    .push(format!("{name}: {error}"));
            }
        }
        let releases = tokio::time::timeout(
            CLUSTER_DEADLINE,
            helm::release_images(&client, &cluster.namespaces, retention.helm.revisions),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no complete listing within {CLUSTER_DEADLINE:?}")));
        match releases {
            Ok(images) => usage.helm.extend(resolve(&matcher, images)),
            Err(error) => {
                tracing::error!(cluster = name, %error, "helm releases unreadable; keeping everything");
                usage.helm_unavailable.push(format!("{name}: {error}"));
            }
        }
    }
    usage
}

fn resolve(matcher: &ImageMatcher, images: Vec<kube::WorkloadImage>) -> Vec<InUse> {
    let mut uses: Vec<InUse> = images
        .into_iter()
        .filter_map(|w| {
            let (repository, image) = matcher.resolve(&w.image)?;
            Some(InUse {
                repository,
                image,
                by: w.by,
            })
        })
        .collect();
    uses.sort_by(|a, b| (&a.repository, &a.image, &a.by).cmp(&(&b.repository, &b.image, &b.by)));
    uses.dedup();
    uses
}
