//! Collects [`Usage`] for the plan: every configured cluster's workload images and Helm
//! release images, resolved to this registry's repositories. A cluster that cannot be read is
//! reported unavailable (fail closed), never skipped silently.

use super::{helm, images::ImageMatcher, kube};
use crate::{
    config::{Cluster, RetentionConfig},
    policy::{InUse, Usage},
};

/// Every cluster read at once; within a cluster, its workload kinds and its Helm releases at
/// once, all under the cluster's `timeout` (a server that accepts and never answers is given up
/// after its `connectTimeout`). A cluster not read completely is unavailable: fail closed.
pub async fn collect(retention: &RetentionConfig) -> Usage {
    let matcher = ImageMatcher::new(&retention.kubernetes.registry_hosts);
    let revisions = retention.helm.revisions;
    let read = retention
        .kubernetes
        .clusters
        .iter()
        .map(|cluster| read_cluster(cluster, revisions));
    let mut usage = Usage::default();
    for (cluster, (workloads, releases)) in retention
        .kubernetes
        .clusters
        .iter()
        .zip(futures_util::future::join_all(read).await)
    {
        let name = &cluster.name;
        match workloads {
            Ok(images) => usage.kubernetes.extend(resolve(&matcher, images)),
            Err(error) => {
                tracing::error!(cluster = name, %error, "kubernetes listing failed; keeping everything");
                usage
                    .kubernetes_unavailable
                    .push(format!("{name}: {error}"));
            }
        }
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

type Listing = Result<Vec<kube::WorkloadImage>, String>;

/// One cluster's workload images and Helm release images.
async fn read_cluster(cluster: &Cluster, revisions: usize) -> (Listing, Listing) {
    let deadline = cluster.timeout.0;
    let work = async {
        let client = kube::client(cluster).await?;
        let namespaces = &cluster.namespaces;
        Ok::<_, String>(
            futures_util::future::join(
                kube::workload_images(&client, namespaces),
                helm::release_images(&client, namespaces, revisions),
            )
            .await,
        )
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(Ok(both)) => both,
        Ok(Err(error)) => {
            let error = format!("client cannot be built: {error}");
            (Err(error.clone()), Err(error))
        }
        Err(_) => {
            let error = format!("not read completely within timeout {deadline:?}");
            (Err(error.clone()), Err(error))
        }
    }
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
