// The entry script of the CLI's start-up snapshot. tools/cli-snapshot.mjs
// fills in the two placeholders below (the bundle, wrapped as a function,
// and the export names of the deferred built-in modules) and runs it under
// `node --build-snapshot`; bin/kiln then starts `node --snapshot-blob ...
// bin/kiln.mjs ARGS`, which deserializes the heap this script left (the
// bundle compiled and its top level run) and calls the main function below.
//
// Two things a snapshot cannot hold, handled here:
// - node:http, node:http2, node:https and node:tls: their native state does not
//   serialize (node aborts the build). The bundle gets a stand-in for each
//   that loads the real module on first use, which is after deserialization;
//   touching one while building is an error (the build fails: no blob, and
//   bin/kiln runs the CLI without a snapshot).
// - paths: the tree may be copied elsewhere after the build, so the bundle's
//   __filename, __dirname, import.meta.url and the require for its external
//   npm modules are set at run time from bin/kiln.mjs's path (argv[1]).
'use strict';
const { dirname, join, resolve } = require('node:path');
const { pathToFileURL } = require('node:url');
const { createRequire, isBuiltin } = require('node:module');
const v8 = require('node:v8');

/** Built-in module -> its export names (from the node that builds the snapshot). */
const DEFERRED = /* KILN_DEFERRED_BUILTINS */ {};

let building = true;
// The snapshot builder's `require` knows built-in modules only; at run time a
// plain require beside the bundle loads the deferred built-ins and npm modules.
let requireAtRunTime = (id) => {
  throw new Error(`${id} cannot be loaded while the CLI snapshot is built`);
};
const loaded = new Map();

function loadDeferred(name) {
  if (building) throw new Error(`node:${name} was used while building the CLI snapshot; it must only be used at run time`);
  let real = loaded.get(name);
  if (real === undefined) {
    real = requireAtRunTime(`node:${name}`);
    loaded.set(name, real);
  }
  return real;
}

/** Stands in for a built-in module until its first use; its keys are known up front for esbuild's __toESM. */
function deferredBuiltin(name, keys) {
  const known = new Set(keys);
  return new Proxy(
    {},
    {
      get: (_t, key) => loadDeferred(name)[key],
      set: (_t, key, value) => {
        loadDeferred(name)[key] = value;
        return true;
      },
      has: (_t, key) => known.has(key),
      ownKeys: () => [...keys],
      getOwnPropertyDescriptor: (_t, key) => (known.has(key) ? { configurable: true, enumerable: true, writable: true, value: undefined } : undefined),
    },
  );
}

function bundleRequire(id) {
  const name = id.startsWith('node:') ? id.slice(5) : id;
  if (Object.hasOwn(DEFERRED, name)) return deferredBuiltin(name, DEFERRED[name]);
  return building && isBuiltin(id) ? require(id) : requireAtRunTime(id);
}

const module_ = { exports: {} };
// (exports, require, module, __filename, __dirname, __kilnBundleUrl) => relocate(filename, dirname, url)
const relocate = /* KILN_CLI_BUNDLE */ undefined(module_.exports, bundleRequire, module_, '', '', '');
const cli = module_.exports;

// One build against an in-process daemon (packages/cli/src/snapshot-warmup.ts):
// the functions it runs are compiled now and kept compiled in the snapshot,
// not compiled from source in every `kiln build`. As at run time, the light
// Headers stand in for Node's (which would load undici). A warm-up that
// fails fails the snapshot build (no blob: the CLI runs without one).
cli.installLightHeaders();
cli.warmUpForSnapshot().then((r) => {
  if (r.code !== 0 || r.calls.length !== 4) throw new Error(`CLI snapshot warm-up build failed: exit ${r.code}, calls answered: ${r.calls.join(', ') || 'none'}`);
});

v8.startupSnapshot.setDeserializeMainFunction(async () => {
  building = false;
  const self = resolve(process.argv[1]); // bin/kiln.mjs
  const bundlePath = join(dirname(self), '..', 'packages', 'cli', 'dist', 'kiln-cli.bundle.cjs');
  relocate(bundlePath, dirname(bundlePath), pathToFileURL(bundlePath).href);
  requireAtRunTime = createRequire(bundlePath);
  // As bin/kiln.mjs does.
  cli.installLightHeaders();
  const code = await cli.main(process.argv.slice(2), { daemonCommand: [process.execPath, self, 'daemon'] });
  process.exit(code);
});
