//! Kubernetes usage: every image reference live workloads hold, per configured cluster —
//! Pods (containers, init and ephemeral containers, and the digests in their statuses),
//! Deployments, StatefulSets, DaemonSets, ReplicaSets, ReplicationControllers, unfinished Jobs
//! and CronJobs. A list that fails (forbidden, server error, unreachable) makes the whole cluster
//! unavailable: the plan then keeps everything that cluster could have kept.
//!
//! Owns: building clients from the config and listing workloads (paginated). May call: `config`.

use std::fmt::Debug;

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    batch::v1::{CronJob, Job},
    core::v1::{Pod, PodSpec, PodTemplateSpec, ReplicationController},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use serde::de::DeserializeOwned;

use crate::config::Cluster;

/// Objects asked for per list call.
const PAGE: u32 = 500;

/// One image reference a workload holds, and where (`prod/Deployment/api container app`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadImage {
    pub image: String,
    pub by: String,
}

/// A client for `cluster` as configured: in-cluster, a kubeconfig file, or the default
/// kubeconfig, with an optional context.
pub async fn client(cluster: &Cluster) -> Result<Client, String> {
    let mut config = if cluster.in_cluster {
        kube::Config::incluster().map_err(|e| e.to_string())?
    } else {
        let options = KubeConfigOptions {
            context: cluster.context.clone(),
            ..KubeConfigOptions::default()
        };
        match &cluster.kubeconfig {
            Some(path) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| e.to_string())?
            }
            None => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| e.to_string())?,
        }
    };
    // A server that accepts and never answers is given up after `connectTimeout`, counted
    // from when each request is sent (not from when its pooled connection went idle).
    config.connect_timeout = Some(cluster.connect_timeout.0);
    config.read_timeout = Some(cluster.connect_timeout.0);
    config.reset_reader_on_write = true;
    Client::try_from(config).map_err(|e| e.to_string())
}

/// Every object of kind `K` in `namespaces` (all when empty), page by page.
pub async fn list_all<K>(
    client: &Client,
    namespaces: &[String],
    params: &ListParams,
) -> Result<Vec<K>, String>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let apis: Vec<Api<K>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let mut objects = Vec::new();
    for api in apis {
        let mut params = params.clone().limit(PAGE);
        loop {
            let page = api.list(&params).await.map_err(|e| {
                format!(
                    "listing {}: {}",
                    K::plural(&K::DynamicType::default()),
                    describe(&e)
                )
            })?;
            objects.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    Ok(objects)
}

fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} {}", status.code, status.message),
        other => other.to_string(),
    }
}

/// Every image reference in the cluster's workloads. The kinds are listed concurrently; any
/// failing fails the whole listing.
pub async fn workload_images(
    client: &Client,
    namespaces: &[String],
) -> Result<Vec<WorkloadImage>, String> {
    let all = ListParams::default();
    let (pods, deployments, stateful_sets, daemon_sets, replica_sets, controllers, jobs, crons) = futures_util::try_join!(
        list_all::<Pod>(client, namespaces, &all),
        list_all::<Deployment>(client, namespaces, &all),
        list_all::<StatefulSet>(client, namespaces, &all),
        list_all::<DaemonSet>(client, namespaces, &all),
        list_all::<ReplicaSet>(client, namespaces, &all),
        list_all::<ReplicationController>(client, namespaces, &all),
        list_all::<Job>(client, namespaces, &all),
        list_all::<CronJob>(client, namespaces, &all),
    )?;
    let mut images = Vec::new();
    for pod in &pods {
        pod_images(pod, &mut images);
    }
    for object in deployments {
        let template = object.spec.as_ref().map(|s| &s.template);
        template_images(template, &place(&object, "Deployment"), &mut images);
    }
    for object in stateful_sets {
        let template = object.spec.as_ref().map(|s| &s.template);
        template_images(template, &place(&object, "StatefulSet"), &mut images);
    }
    for object in daemon_sets {
        let template = object.spec.as_ref().map(|s| &s.template);
        template_images(template, &place(&object, "DaemonSet"), &mut images);
    }
    for object in replica_sets {
        let template = object.spec.as_ref().and_then(|s| s.template.as_ref());
        template_images(template, &place(&object, "ReplicaSet"), &mut images);
    }
    for object in controllers {
        let template = object.spec.as_ref().and_then(|s| s.template.as_ref());
        template_images(
            template,
            &place(&object, "ReplicationController"),
            &mut images,
        );
    }
    for job in jobs {
        if finished(&job) {
            continue;
        }
        let template = job.spec.as_ref().map(|s| &s.template);
        template_images(template, &place(&job, "Job"), &mut images);
    }
    for cron in crons {
        let template = cron
            .spec
            .as_ref()
            .and_then(|s| s.job_template.spec.as_ref())
            .map(|s| &s.template);
        template_images(template, &place(&cron, "CronJob"), &mut images);
    }
    Ok(images)
}

/// What a pod's spec names and, from its status, the digests actually running.
fn pod_images(pod: &Pod, images: &mut Vec<WorkloadImage>) {
    let at = place(pod, "Pod");
    if let Some(spec) = &pod.spec {
        pod_spec_images(spec, &at, images);
        for container in spec.ephemeral_containers.iter().flatten() {
            push(images, container.image.as_deref(), &at, &container.name);
        }
    }
    if let Some(status) = &pod.status {
        let statuses = [
            &status.container_statuses,
            &status.init_container_statuses,
            &status.ephemeral_container_statuses,
        ];
        for status in statuses.into_iter().flatten().flatten() {
            // The digest actually running, whatever tag the spec names.
            push(images, Some(&status.image_id), &at, &status.name);
        }
    }
}

/// A Job whose `Complete` or `Failed` condition is true runs nothing any more.
fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

fn place<K: Resource + ResourceExt>(object: &K, kind: &str) -> String {
    format!(
        "{}/{kind}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

fn template_images(template: Option<&PodTemplateSpec>, at: &str, images: &mut Vec<WorkloadImage>) {
    if let Some(spec) = template.and_then(|t| t.spec.as_ref()) {
        pod_spec_images(spec, at, images);
    }
}

fn pod_spec_images(spec: &PodSpec, at: &str, images: &mut Vec<WorkloadImage>) {
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        push(images, container.image.as_deref(), at, &container.name);
    }
}

fn push(images: &mut Vec<WorkloadImage>, image: Option<&str>, at: &str, container: &str) {
    if let Some(image) = image.filter(|i| !i.is_empty()) {
        images.push(WorkloadImage {
            image: image.to_string(),
            by: format!("{at} container {container}"),
        });
    }
}
