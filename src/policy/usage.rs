//! What live systems use, as the policy core sees it: image references from Kubernetes
//! workloads and Helm releases, already resolved to repositories, plus the sources that could
//! not be read (which make the plan keep everything they could have kept).

/// A tag or a digest in a repository.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageRef {
    Tag(String),
    Digest(String),
}

/// One use: where it is, in the words of a keep reason (`prod/Deployment/api container app`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InUse {
    pub repository: String,
    pub image: ImageRef,
    pub by: String,
}

#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// Images live workloads reference.
    pub kubernetes: Vec<InUse>,
    /// Clusters that could not be listed (name: cause): fail closed.
    pub kubernetes_unavailable: Vec<String>,
    /// Images in the kept revisions of Helm releases.
    pub helm: Vec<InUse>,
    /// Clusters whose Helm releases could not be read (name: cause): fail closed.
    pub helm_unavailable: Vec<String>,
}
