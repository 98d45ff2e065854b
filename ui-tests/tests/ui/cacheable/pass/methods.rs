// Inherent and trait-impl methods with `&self`, `{self.field}` in tags and
// `cache = self.cache`.
use cacheable::{Cache, cache_evict, cacheable};

struct Repo {
    cache: Cache,
    tenant: String,
}

impl Repo {
    /// Docs stay on the method.
    #[cacheable(ttl = "5m", cache = self.cache, tags = ["t:{self.tenant}", "user:{id}"])]
    pub async fn name(&self, id: u64) -> Result<String, std::io::Error> {
        Ok(format!("{}:{id}", self.tenant))
    }

    #[cache_evict(cache = self.cache, tags = ["user:{id}"])]
    pub async fn rename(&self, id: u64, name: String) -> Result<(), std::io::Error> {
        let _ = (id, name);
        Ok(())
    }

    #[cacheable(ttl = 1)]
    async fn consume(self, n: u32) -> u32 {
        drop(self);
        n
    }
}

trait Lookup {
    async fn lookup(&self, id: u32) -> Option<u32>;
}

impl Lookup for Repo {
    #[cacheable(ttl = 60, cache = self.cache, name = "repo.lookup", version = 3)]
    async fn lookup(&self, id: u32) -> Option<u32> {
        Some(id + u32::try_from(self.tenant.len()).ok()?)
    }
}

fn main() {
    let repo = Repo {
        cache: Cache::memory(),
        tenant: "t".into(),
    };
    let _ = repo.name(1);
    let _ = repo.rename(1, "n".into());
    let _ = repo.lookup(1);
    let _ = repo.consume(1);
}
