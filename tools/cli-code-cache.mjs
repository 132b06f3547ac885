#!/usr/bin/env node
// Writes V8's code cache for the CLI bundle (packages/cli/dist/kiln-cli.bundle.cache;
// see bin/kiln-cli-loader.mjs). Run by tools/bundle-cli.mjs.
//
// V8 caches the functions compiled so far, so before writing it this runs
// the CLI once the way `kiln build` starts: flags, the Dockerfile, the
// context walk, the client and its connection, up to the point where no
// daemon answers (a socket path that does not exist; no daemon is started).
// A cache of the top level alone saves about half as much.
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { bundleBuildId, BUNDLE_PATH, CACHE_PATH, loadCliBundle } from '../bin/kiln-cli-loader.mjs';
import { readFileSync } from 'node:fs';

const id = bundleBuildId(readFileSync(BUNDLE_PATH, 'utf8'));
if (id === undefined) throw new Error(`${BUNDLE_PATH} has no build id on its first line: bundle it with tools/bundle-cli.mjs`);
const { exports: cli, script } = loadCliBundle({ useCache: false });

const work = mkdtempSync(join(tmpdir(), 'kiln-cli-cache-'));
try {
  mkdirSync(join(work, 'ctx'));
  writeFileSync(join(work, 'ctx', 'a.txt'), 'a\n');
  writeFileSync(join(work, 'Dockerfile'), 'FROM scratch\nCOPY a.txt /\n');
  const sink = () => new Writable({ write: (_chunk, _enc, done) => done() });
  const signal = new AbortController().signal;
  const run = (argv) => cli.main(argv, { daemonCommand: [], vars: { HOME: work }, cwd: work, stdout: sink(), stderr: sink(), signal });
  const addr = `unix://${join(work, 'no-daemon.sock')}`;
  await run(['build', '--progress=plain', '--addr', addr, '-f', join(work, 'Dockerfile'), '-t', 'kiln-cache:latest', join(work, 'ctx')]);
  await run(['workers', '--addr', addr]);
} finally {
  rmSync(work, { recursive: true, force: true });
}
const tmp = `${CACHE_PATH}.${process.pid}.tmp`;
writeFileSync(tmp, Buffer.concat([Buffer.from(`kiln-cli-build ${id}\n`, 'latin1'), script.createCachedData()]));
renameSync(tmp, CACHE_PATH);
