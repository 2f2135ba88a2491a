//! Precompiled components cached on disk, so a restart does not recompile.
//!
//! A cache entry is `<sha256 of the component>-<engine key>.cwasm` plus a `.sha256`
//! sidecar holding the digest of the `.cwasm` itself. The engine key covers
//! [`Engine::precompile_compatibility_hash`] (compiler flags, tunables, features and the
//! wasmtime version), so an engine configured
//! differently never even looks at another's artifacts; wasmtime checks the header again
//! when loading. Entries are written to a temporary file and renamed into place, so a
//! crash never leaves a half-written entry under the final name.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::{Result, RuntimeError};

/// Where a loaded plugin's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadSource {
    /// Compiled with Cranelift now (and written to the cache).
    Compiled,
    /// Loaded from the on-disk cache without compiling.
    Cache,
}

pub(crate) struct ComponentCache {
    dir: PathBuf,
    engine_key: String,
}

impl ComponentCache {
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> Result<Self> {
        fs::create_dir_all(&dir).map_err(|source| RuntimeError::Cache {
            path: dir.clone(),
            source,
        })?;
        // `DefaultHasher::new()` uses fixed keys, so the value is stable across processes
        // built by the same compiler; a different compiler only costs a cache miss.
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        // The hash covers the target, compiler flags, tunables, wasm features and the
        // wasmtime version (`module_version`).
        let engine_key = format!("engine{:016x}", hasher.finish());
        Ok(Self { dir, engine_key })
    }

    /// The cache file for a component, by content.
    pub(crate) fn path_for(&self, component_bytes: &[u8]) -> PathBuf {
        let digest = hex::encode(Sha256::digest(component_bytes));
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// Loads `component_bytes` from the cache, or compiles and caches it.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        component_bytes: &[u8],
    ) -> Result<(Component, LoadSource)> {
        let path = self.path_for(component_bytes);
        match self.try_load(engine, &path) {
            Ok(Some(component)) => return Ok((component, LoadSource::Cache)),
            Ok(None) => {}
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "discarding a bad cache entry");
            }
        }
        let compiled = engine
            .precompile_component(component_bytes)
            .map_err(|e| RuntimeError::Compile(crate::error::chain(&e)))?;
        self.store(&path, &compiled)?;
        // SAFETY: `compiled` was produced by this engine a moment ago.
        let component = unsafe { Component::deserialize(engine, &compiled) }
            .map_err(|e| RuntimeError::Compile(crate::error::chain(&e)))?;
        Ok((component, LoadSource::Compiled))
    }

    /// `Ok(None)`: no entry. `Err`: an entry that must not be trusted.
    fn try_load(&self, engine: &Engine, path: &Path) -> Result<Option<Component>, String> {
        let expected = match fs::read_to_string(digest_path(path)) {
            Ok(digest) => digest,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading digest: {e}")),
        };
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading artifact: {e}")),
        };
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != expected.trim() {
            return Err(format!(
                "artifact digest {actual} does not match the recorded {}",
                expected.trim()
            ));
        }
        drop(bytes);
        // SAFETY: `deserialize_file` runs whatever machine code the file holds. The cache
        // directory is owned by the host and not writable by tenants or plugins (it is
        // configuration, like the binary itself); the digest check above catches torn or
        // corrupted writes, and wasmtime rejects artifacts built by an incompatible
        // engine or wasmtime version.
        unsafe { Component::deserialize_file(engine, path) }
            .map(Some)
            .map_err(|e| format!("wasmtime refused the artifact: {}", crate::error::chain(&e)))
    }

    fn store(&self, path: &Path, compiled: &[u8]) -> Result<()> {
        let digest = hex::encode(Sha256::digest(compiled));
        write_atomically(&digest_path(path), digest.as_bytes())?;
        write_atomically(path, compiled)
    }
}

fn digest_path(path: &Path) -> PathBuf {
    path.with_extension("cwasm.sha256")
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |source| RuntimeError::Cache {
        path: path.to_path_buf(),
        source,
    };
    // Unique per process and per write, so concurrent loads of one component never share
    // a temporary file; the last rename wins with identical content.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut file = fs::File::create(&tmp).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(epochs: bool) -> Engine {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(epochs);
        Engine::new(&config).unwrap()
    }

    /// An artifact from an engine configured differently is never loaded: its key differs,
    /// and even when planted under this engine's key (with a valid digest) wasmtime's own
    /// check refuses it and the component is recompiled.
    #[test]
    fn an_artifact_from_another_engine_is_not_loaded() {
        let bytes = std::fs::read(cairn_test_plugins::HOSTILE).unwrap();
        let dir = tempfile::TempDir::new().unwrap();
        let (a, b) = (engine(true), engine(false));
        let cache_a = ComponentCache::new(dir.path().to_path_buf(), &a).unwrap();
        let cache_b = ComponentCache::new(dir.path().to_path_buf(), &b).unwrap();
        let (path_a, path_b) = (cache_a.path_for(&bytes), cache_b.path_for(&bytes));
        assert_ne!(path_a, path_b, "the engine key separates the entries");

        let (_, source) = cache_a.load_or_compile(&a, &bytes).unwrap();
        assert_eq!(source, LoadSource::Compiled);
        assert!(matches!(cache_b.try_load(&b, &path_b), Ok(None)));

        fs::copy(&path_a, &path_b).unwrap();
        fs::copy(digest_path(&path_a), digest_path(&path_b)).unwrap();
        let refused = cache_b.try_load(&b, &path_b).expect_err("refused");
        assert!(
            refused.starts_with("wasmtime refused the artifact"),
            "{refused}"
        );
        let (_, source) = cache_b.load_or_compile(&b, &bytes).unwrap();
        assert_eq!(source, LoadSource::Compiled);
        let (_, source) = cache_b.load_or_compile(&b, &bytes).unwrap();
        assert_eq!(source, LoadSource::Cache);
    }
}
