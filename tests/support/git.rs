//! Real git repositories built in the test with git2: commits with chosen committer dates,
//! remote-tracking and local branches, lightweight and annotated tags.

use git2::{Oid, Repository, Signature, Time};

pub struct GitRepo {
    pub dir: tempfile::TempDir,
    repo: Repository,
    tree: Oid,
}

impl GitRepo {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let tree = repo.treebuilder(None).unwrap().write().unwrap();
        Self { dir, repo, tree }
    }

    fn signature(time: i64) -> Signature<'static> {
        Signature::new("CI", "ci@example.com", &Time::new(time, 0)).unwrap()
    }

    /// A commit with `parents`, committed at `time` (seconds since the epoch).
    pub fn commit(&self, parents: &[Oid], time: i64) -> Oid {
        let tree = self.repo.find_tree(self.tree).unwrap();
        let parents: Vec<git2::Commit> = parents
            .iter()
            .map(|p| self.repo.find_commit(*p).unwrap())
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        let signature = Self::signature(time);
        self.repo
            .commit(
                None,
                &signature,
                &signature,
                &format!("at {time}"),
                &tree,
                &parents,
            )
            .unwrap()
    }

    /// A line of `count` commits on top of `parent`, one every `step` seconds from `start`.
    pub fn line(&self, parent: Option<Oid>, start: i64, step: i64, count: usize) -> Vec<Oid> {
        let mut commits = Vec::new();
        let mut last = parent;
        for i in 0..count {
            let parents: Vec<Oid> = last.into_iter().collect();
            let commit = self.commit(&parents, start + step * i as i64);
            commits.push(commit);
            last = Some(commit);
        }
        commits
    }

    /// `refs/remotes/origin/<name>`.
    pub fn remote_branch(&self, name: &str, commit: Oid) {
        self.repo
            .reference(&format!("refs/remotes/origin/{name}"), commit, true, "test")
            .unwrap();
    }

    /// `refs/heads/<name>`.
    pub fn local_branch(&self, name: &str, commit: Oid) {
        self.repo
            .reference(&format!("refs/heads/{name}"), commit, true, "test")
            .unwrap();
    }

    pub fn lightweight_tag(&self, name: &str, commit: Oid) {
        self.repo
            .reference(&format!("refs/tags/{name}"), commit, true, "test")
            .unwrap();
    }

    /// An annotated tag whose tagger date is `time`.
    pub fn annotated_tag(&self, name: &str, commit: Oid, time: i64) {
        let object = self.repo.find_object(commit, None).unwrap();
        self.repo
            .tag(name, &object, &Self::signature(time), "release", true)
            .unwrap();
    }

    /// `git rev-parse <tag>`: an annotated tag's own object id (not its commit's), which is
    /// what CI often stamps.
    pub fn tag_object(&self, name: &str) -> String {
        self.repo
            .revparse_single(&format!("refs/tags/{name}"))
            .unwrap()
            .id()
            .to_string()
    }
}
