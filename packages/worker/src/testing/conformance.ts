import { readdirSync, readFileSync } from 'node:fs';
import { copyFile, lstat, mkdir, mkdtemp, readFile, rm, symlink, utimes, writeFile, chmod, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { create } from '@bufbuild/protobuf';
import { events, llb } from '@kiln/api';
import { KilnError, silentLogger, type Logger } from '@kiln/common';
import { FileChain, local, marshalOp, merge, digestOf, source, State } from '@kiln/llb';
import { workerProgressSubject } from '@kiln/bus';
import type { Entitlement, PublishFn, SessionFiles, Worker } from '../worker.js';
import { execOp } from './exec-op.js';
import { createEventCollector, type CollectedEvent } from './events.js';
import { execState, outputOf } from './exec-state.js';
import { createFakeSession, type FakeSession } from './fake-session.js';
import { solve } from './solve.js';
import { hasSshAgent, sshAddClient, startSshAgent } from './ssh-agent.js';
import { buildTar, collect, readTar, type TarEntry } from './tar.js';

/** What the suite hands a backend to build its worker from. */
export interface WorkerConformanceDeps {
  /** A fresh empty directory for the worker's state (snapshots, runtime state). */
  root: string;
  sessions: SessionFiles;
  publish: PublishFn;
  logger: Logger;
  /** Entitlements the daemon permits (pass to WorkerOptions.allowedEntitlements); some cases ask for them. */
  allowedEntitlements?: Entitlement[];
}

export interface WorkerConformanceOptions {
  /**
   * What the backend does with exec ops:
   * - "run": it runs them; the exec cases use the host's static
   *   /bin/busybox as the container's rootfs (needs root and a runtime);
   * - "unimplemented": it rejects them with UnimplementedError;
   * - "skip" (default): the exec cases are skipped (e.g. no runtime here).
   */
  exec?: 'run' | 'unimplemented' | 'skip';
}

const MTIME = 1_600_000_000;

/**
 * The worker conformance suite: every Worker backend must pass it. It
 * builds ops with @kiln/llb, runs them through `makeWorker`'s worker with a
 * fake session (SessionService over an in-memory transport) and checks the
 * exported tars, events and errors. Registers vitest cases under
 * `describe(name)`; call it at the top level of a spec file.
 */
export function runWorkerConformance(
  name: string,
  makeWorker: (deps: WorkerConformanceDeps) => Worker | Promise<Worker>,
  options: WorkerConformanceOptions = {},
): void {
  // Cases of another exec mode are not registered at all (rather than shown
  // as skipped): they are alternatives, not missing coverage.
  const whenMode = <T extends (...args: never[]) => unknown>(mode: WorkerConformanceOptions['exec'], fn: T): T =>
    ((options.exec ?? 'skip') === mode ? fn : () => undefined) as T;
  describe(`worker conformance: ${name}`, () => {
    let base: string;
    let contextDir: string;
    let rootfsDir: string | undefined;
    let session: FakeSession;
    let collector: { publish: PublishFn; events: CollectedEvent[] };
    let worker: Worker;
    let n = 0;

    beforeAll(async () => {
      base = await mkdtemp(path.join(tmpdir(), 'kiln-worker-conformance-'));
      contextDir = path.join(base, 'context');
      await writeTree(contextDir, {
        'a.txt': { data: 'A', mode: 0o644 },
        'bin/': { mode: 0o755 },
        'bin/run.sh': { data: '#!/bin/sh\necho run\n', mode: 0o755 },
        'dir/': { mode: 0o755 },
        'dir/c.md': { data: 'C', mode: 0o600 },
        'dir/sub/': { mode: 0o750 },
        'dir/sub/b.txt': { data: 'B', mode: 0o644 },
        link: { symlink: 'a.txt' },
      });
      if (options.exec === 'run') rootfsDir = await makeBusyboxRootfs(path.join(base, 'rootfs'));
    });
    afterAll(async () => {
      await rm(base, { recursive: true, force: true });
    });
    let root: string;
    const extraWorkers: Worker[] = [];
    /** Another worker over the same session and events, e.g. on the same root or with other permissions. */
    const newWorker = async (o: { root?: string; allowedEntitlements?: Entitlement[] } = {}): Promise<Worker> => {
      const w = await makeWorker({ root: o.root ?? root, sessions: session.client, publish: collector.publish, logger: silentLogger(), allowedEntitlements: o.allowedEntitlements });
      extraWorkers.push(w);
      return w;
    };
    beforeEach(async () => {
      session = createFakeSession({ context: { dir: contextDir }, ...(rootfsDir ? { rootfs: { dir: rootfsDir } } : {}) });
      collector = createEventCollector();
      root = path.join(base, `worker-${++n}`);
      await mkdir(root);
      worker = await makeWorker({ root, sessions: session.client, publish: collector.publish, logger: silentLogger() });
    });
    afterEach(async () => {
      await worker.close();
      for (const w of extraWorkers.splice(0)) await w.close();
    });

    const exportOf = async (ref: string | undefined): Promise<TarEntry[]> => {
      if (!ref) throw new Error('no ref');
      return readTar(worker.exportRef(ref));
    };
    const solveAndExport = async (s: State): Promise<TarEntry[]> => exportOf(await solve(worker, s));
    const names = (entries: TarEntry[]) => entries.map((e) => e.name);
    const byName = (entries: TarEntry[], n: string): TarEntry => {
      const e = entries.find((x) => x.name === n);
      if (!e) throw new Error(`no entry ${n} in ${names(entries).join(', ')}`);
      return e;
    };
    const expectRunError = async (s: State): Promise<KilnError> => {
      const err = await solve(worker, s).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(KilnError);
      return err as KilnError;
    };
    const ctx = () => local('context');

    it('describes itself', async () => {
      const d = await worker.describe();
      expect(d.id).not.toBe('');
      expect(['oci', 'containerd']).toContain(d.backend);
      expect(d.platforms.length).toBeGreaterThan(0);
    });

    describe('local source', () => {
      it('transfers the session directory with modes, mtimes and symlinks', async () => {
        const entries = await solveAndExport(ctx());
        expect(names(entries)).toEqual(['a.txt', 'bin/', 'bin/run.sh', 'dir/', 'dir/c.md', 'dir/sub/', 'dir/sub/b.txt', 'link']);
        expect(byName(entries, 'a.txt')).toMatchObject({ type: 'file', mode: 0o644, mtime: MTIME, uid: 0, gid: 0 });
        expect(byName(entries, 'a.txt').data.toString()).toBe('A');
        expect(byName(entries, 'bin/run.sh').mode).toBe(0o755);
        expect(byName(entries, 'dir/c.md').mode).toBe(0o600);
        expect(byName(entries, 'dir/sub/')).toMatchObject({ type: 'directory', mode: 0o750, mtime: MTIME });
        expect(byName(entries, 'link')).toMatchObject({ type: 'symlink', linkname: 'a.txt' });
      });

      it('publishes transfer status on kiln.progress.<worker>.<build>.status', async () => {
        const s = ctx();
        await solve(worker, s, { buildId: 'b42' });
        const digest = s.output!.vertex.marshal().digest;
        const statuses = collector.events.filter((e) => e.event.event.case === 'status');
        expect(statuses.length).toBeGreaterThan(0);
        const last = statuses.at(-1)!;
        expect(last.subject).toBe(workerProgressSubject(worker.id, 'b42', 'status'));
        expect(last.event.buildId).toBe('b42');
        const st = last.event.event.value as events.VertexStatus;
        expect(st.id).toBe('transferring context:');
        expect(st.name).toBe('transferring context:');
        expect(st.vertex).toBe(digest);
        expect(st.current).toBeGreaterThan(0n);
        expect(st.started).toBeDefined();
        expect(st.completed).toBeDefined();
      });

      it('passes include and exclude patterns to the session', async () => {
        const entries = await solveAndExport(local('context', { includePatterns: ['dir', 'a.txt'], excludePatterns: ['**/*.md'] }));
        expect(session.fetches.at(-1)).toMatchObject({ sessionId: 'session-1', dirName: 'context', includePatterns: ['dir', 'a.txt'], excludePatterns: ['**/*.md'] });
        expect(names(entries)).toEqual(['a.txt', 'dir/', 'dir/sub/', 'dir/sub/b.txt']);
      });

      it('with a shared key, transfers only what changed since the last copy (mtimes never count)', async () => {
        const dir = path.join(base, `incremental-${n}`);
        await writeTree(dir, { 'keep.txt': { data: 'K'.repeat(50_000) }, 'sub/': {}, 'sub/edit.txt': { data: 'old' }, 'sub/gone.txt': { data: 'G' } });
        session.dirs.set('inc', { dir, sharedKey: 'key-1' });
        const op = local('inc');
        const { bytes, digest } = op.output!.vertex.marshal();
        const run = async () => {
          const res = await worker.run({ buildId: 'b', sessionId: 'session-1', vertexDigest: digest, op: bytes, inputRefs: [] });
          const tree = await exportOf(res.outputRefs[0]);
          await worker.release(res.outputRefs);
          return { tree, digest: res.contentDigests?.[0], sent: session.sentBytes.at(-1)! };
        };
        const first = await run();
        expect(first.sent).toBeGreaterThan(50_000);
        await writeFile(path.join(dir, 'sub/edit.txt'), 'new!');
        await rm(path.join(dir, 'sub/gone.txt'));
        const second = await run();
        expect(second.sent).toBeLessThan(1000);
        expect(names(second.tree)).toEqual(['keep.txt', 'sub/', 'sub/edit.txt']);
        expect(byName(second.tree, 'sub/edit.txt').data.toString()).toBe('new!');
        expect(byName(second.tree, 'keep.txt').data.length).toBe(50_000);
        expect(second.digest).not.toBe(first.digest);
        await utimes(path.join(dir, 'keep.txt'), MTIME + 100, MTIME + 100);
        const touched = await run();
        expect(touched.digest).toBe(second.digest);
        expect(byName(touched.tree, 'keep.txt').mtime).toBe(MTIME + 100);
        // The same tree sent in full (no shared key) has the same digest.
        session.dirs.set('inc', { dir });
        const full = await run();
        expect(full.digest).toBe(second.digest);
        expect(full.tree).toEqual(touched.tree);
      });

      it('fails with a VertexError for a directory the session does not share', async () => {
        const s = local('nope');
        const err = await expectRunError(s);
        expect(err.code).toBe('vertex');
        expect(err.details.digest).toBe(s.output!.vertex.marshal().digest);
        expect(err.message).toMatch(/failed to transfer local directory "nope"/);
      });

      it('keeps a hostile tar inside the snapshot', async () => {
        const outside = await mkdtemp(path.join(base, 'outside-'));
        await writeFile(path.join(outside, 'victim'), 'original');
        const probe = `kiln-conformance-probe-${process.pid}-${n}`;
        session.dirs.set('evil', {
          tar: await buildTar([
            { name: '../x', data: 'dotdot' },
            { name: '/abs', data: 'absolute' },
            { name: 'l', type: 'symlink', linkname: '/' },
            // Through `l -> /`: would land in the host's /etc and the temp dir if followed.
            { name: `l/etc/${probe}`, data: 'escaped' },
            { name: `l${outside}/victim`, data: 'overwritten' },
            { name: 'up', type: 'symlink', linkname: '../../../../../../../..' },
            { name: `up${outside}/victim`, data: 'overwritten' },
            { name: 'chain1', type: 'symlink', linkname: 'chain2' },
            { name: 'chain2', type: 'symlink', linkname: `/../..${outside}` },
            { name: 'chain1/victim', data: 'overwritten' },
            { name: 'hard', type: 'link', linkname: '/abs' },
          ]),
        });
        const entries = await solveAndExport(local('evil'));
        expect(await readFile(path.join(outside, 'victim'), 'utf8')).toBe('original');
        await expect(access(path.join('/etc', probe))).rejects.toThrow();
        const got = (n: string) => byName(entries, n).data.toString();
        expect(got('x')).toBe('dotdot');
        expect(got('abs')).toBe('absolute');
        expect(got(`etc/${probe}`)).toBe('escaped');
        expect(got(`${outside.slice(1)}/victim`)).toBe('overwritten');
        expect(byName(entries, 'l')).toMatchObject({ type: 'symlink', linkname: '/' });
        expect(byName(entries, 'hard')).toMatchObject({ type: 'link', linkname: 'abs' });
      });
    });

    describe('file ops', () => {
      it('copies a file into a directory when dest ends with /', async () => {
        const entries = await solveAndExport(FileChain.start().copy(ctx(), '/a.txt', '/out/', { createDestPath: true }).apply(State.scratch()));
        expect(names(entries)).toEqual(['out/', 'out/a.txt']);
        expect(byName(entries, 'out/a.txt')).toMatchObject({ mode: 0o644, mtime: MTIME });
        expect(byName(entries, 'out/a.txt').data.toString()).toBe('A');
      });

      it('keeps source parent directories with parents, below the /./ pivot when there is one', async () => {
        const opts = { parents: true, allowWildcard: true, createDestPath: true, followSymlink: true };
        const s = FileChain.start()
          .copy(ctx(), '/dir/sub/b.txt', '/plain/', opts)
          .copy(ctx(), '/a.txt', '/plain/', opts)
          .copy(ctx(), '/dir/./sub/*.txt', '/pivot/', opts)
          .copy(ctx(), '/./dir/**/*.md', '/deep', opts)
          .copy(ctx(), '/bin/./', '/whole/', opts)
          .apply(State.scratch());
        const entries = await solveAndExport(s);
        expect(names(entries)).toEqual([
          'deep/', 'deep/dir/', 'deep/dir/c.md',
          'pivot/', 'pivot/sub/', 'pivot/sub/b.txt',
          'plain/', 'plain/a.txt', 'plain/dir/', 'plain/dir/sub/', 'plain/dir/sub/b.txt',
          'whole/', 'whole/run.sh',
        ]);
        expect(byName(entries, 'plain/dir/sub/')).toMatchObject({ mode: 0o750, mtime: MTIME });
        expect(byName(entries, 'pivot/sub/b.txt').data.toString()).toBe('B');
        const missing = await expectRunError(FileChain.start().copy(ctx(), '/dir/nope.txt', '/x/', opts).apply(State.scratch()));
        expect(missing.message).toMatch(/no such file or directory/);
        const noMatch = await expectRunError(FileChain.start().copy(ctx(), '/dir/*.none', '/x/', opts).apply(State.scratch()));
        expect(noMatch.message).toMatch(/no matches found/);
      });

      it('expands wildcards in the pivot of a parents copy: each matched directory is a pivot', async () => {
        const opts = { parents: true, allowWildcard: true, allowEmptyWildcard: true, createDestPath: true, followSymlink: true };
        const s = FileChain.start()
          .copy(ctx(), '/*/./**/*.md', '/md/', opts)
          .copy(ctx(), '/d*/./sub/b.txt', '/p/', opts)
          .copy(ctx(), '/n*/./x', '/none/', opts)
          .apply(State.scratch());
        expect(names(await solveAndExport(s))).toEqual(['md/', 'md/c.md', 'p/', 'p/sub/', 'p/sub/b.txt']);
        const missing = await expectRunError(FileChain.start().copy(ctx(), '/*/./nope.txt', '/x/', opts).apply(State.scratch()));
        expect(missing.message).toMatch(/no such file or directory/);
      });

      it('copies into a dangling symlink destination by creating its target, inside the root', async () => {
        const s = FileChain.start()
          .symlink('../tmp/target', '/link')
          .symlink('/../../outside', '/escape')
          .copy(ctx(), '/a.txt', '/link/', { createDestPath: true })
          .copy(ctx(), '/a.txt', '/escape/', { createDestPath: true })
          .apply(State.scratch());
        const entries = await solveAndExport(s);
        expect(names(entries)).toEqual(['escape', 'link', 'outside/', 'outside/a.txt', 'tmp/', 'tmp/target/', 'tmp/target/a.txt']);
        expect(byName(entries, 'link')).toMatchObject({ type: 'symlink', linkname: '../tmp/target' });
      });

      it('follows symlinks on the source path: a linked directory, and a linked file with followSymlink', async () => {
        const linked = FileChain.start()
          .mkdir('/real', 0o700)
          .mkfile('/real/f', 0o600, new TextEncoder().encode('F'))
          .mkfile('/bar', 0o644, new TextEncoder().encode('bar'))
          .symlink('real', '/dirlink')
          .symlink('../bar', '/real/sub')
          .apply(State.scratch());
        const entries = await solveAndExport(
          FileChain.start().copy(linked, '/dirlink/f', '/f').copy(linked, '/real/sub', '/sub', { followSymlink: true }).copy(linked, '/real', '/kept', { dirCopyContents: true }).apply(State.scratch()),
        );
        expect(byName(entries, 'f').data.toString()).toBe('F');
        expect(byName(entries, 'sub')).toMatchObject({ type: 'file' });
        expect(byName(entries, 'sub').data.toString()).toBe('bar');
        // Links inside a copied directory stay links.
        expect(byName(entries, 'kept/sub')).toMatchObject({ type: 'symlink', linkname: '../bar' });
      });

      it('gives the directories a copy creates its chmod; existing ones keep theirs', async () => {
        const s = FileChain.start()
          .copy(ctx(), '/a.txt', '/p/a.txt', { createDestPath: true, mode: 0o777 })
          .copy(ctx(), '/a.txt', '/p/sub/a.txt', { createDestPath: true, mode: 0o770 })
          .copy(ctx(), '/a.txt', '/q/', { createDestPath: true, modeStr: 'go-rx' })
          .apply(State.scratch());
        const entries = await solveAndExport(s);
        expect(byName(entries, 'p/').mode).toBe(0o777);
        expect(byName(entries, 'p/sub/').mode).toBe(0o770);
        expect(byName(entries, 'p/sub/a.txt').mode).toBe(0o770);
        expect(byName(entries, 'q/').mode).toBe(0o700);
        expect(byName(entries, 'q/a.txt').mode).toBe(0o600);
      });

      it('extracts a local tar archive (ADD) with --chown applied to every extracted entry', async () => {
        const tar = await buildTar([
          { name: 'top/', type: 'directory', mode: 0o755, uid: 7, gid: 7 },
          { name: 'top/f', data: 'f', mode: 0o640, uid: 7, gid: 7 },
          { name: 'top/l', type: 'symlink', linkname: 'f', uid: 7, gid: 7 },
        ]);
        const src = FileChain.start().mkfile('/a.tar', 0o644, tar).apply(State.scratch());
        const owner = { user: { user: { case: 'id' as const, value: 1000 } }, group: { user: { case: 'id' as const, value: 2000 } } };
        const entries = await solveAndExport(
          FileChain.start().copy(src, '/a.tar', '/x/', { createDestPath: true, attemptUnpackDockerCompatibility: true, owner }).apply(State.scratch()),
        );
        expect(names(entries)).toEqual(['x/', 'x/top/', 'x/top/f', 'x/top/l']);
        for (const e of entries) expect(e, e.name).toMatchObject({ uid: 1000, gid: 2000 });
        expect(byName(entries, 'x/top/f').mode).toBe(0o640);
      });

      it('merges inputs in order: later files replace earlier ones, directories merge, modes and mtimes kept', async () => {
        const lower = FileChain.start()
          .mkdir('/shared', 0o700)
          .mkfile('/shared/low.txt', 0o600, new TextEncoder().encode('low'))
          .mkfile('/shared/both.txt', 0o644, new TextEncoder().encode('lower'))
          .mkfile('/turns-dir', 0o644, new TextEncoder().encode('file'))
          .apply(State.scratch());
        const upper = FileChain.start()
          .copy(ctx(), '/dir/', '/shared/', { createDestPath: true, dirCopyContents: true })
          .mkfile('/shared/both.txt', 0o640, new TextEncoder().encode('upper'))
          .mkdir('/turns-dir', 0o755)
          .mkfile('/turns-dir/x', 0o644, new TextEncoder().encode('x'))
          .apply(State.scratch());
        const top = FileChain.start().mkdir('/shared', 0o700).symlink('both.txt', '/shared/link').apply(State.scratch());
        const entries = await solveAndExport(merge([lower, upper, top]));
        expect(names(entries)).toEqual(['shared/', 'shared/both.txt', 'shared/c.md', 'shared/link', 'shared/low.txt', 'shared/sub/', 'shared/sub/b.txt', 'turns-dir/', 'turns-dir/x']);
        expect(byName(entries, 'shared/both.txt')).toMatchObject({ mode: 0o640 });
        expect(byName(entries, 'shared/both.txt').data.toString()).toBe('upper');
        expect(byName(entries, 'shared/low.txt').data.toString()).toBe('low');
        expect(byName(entries, 'shared/sub/')).toMatchObject({ mode: 0o750, mtime: MTIME });
        expect(byName(entries, 'shared/link')).toMatchObject({ type: 'symlink', linkname: 'both.txt' });
        // The inputs are untouched.
        expect(names(await solveAndExport(lower))).toEqual(['shared/', 'shared/both.txt', 'shared/low.txt', 'turns-dir']);
      });

      it('copies a file to a new name and onto an existing directory', async () => {
        const s = FileChain.start()
          .copy(ctx(), '/a.txt', '/b.txt')
          .mkdir('/d', 0o755)
          .copy(ctx(), '/a.txt', '/d')
          .apply(State.scratch());
        const entries = await solveAndExport(s);
        expect(names(entries)).toEqual(['b.txt', 'd/', 'd/a.txt']);
      });

      it('applies a symbolic chmod to every copied entry from its own mode', async () => {
        const entries = await solveAndExport(
          FileChain.start().copy(ctx(), '/dir', '/x', { dirCopyContents: true, createDestPath: true, modeStr: 'go-rwx,u+X' }).apply(State.scratch()),
        );
        expect(byName(entries, 'x/c.md').mode).toBe(0o600);
        expect(byName(entries, 'x/sub/').mode).toBe(0o700);
        expect(byName(entries, 'x/sub/b.txt').mode).toBe(0o600);
        const bad = await expectRunError(FileChain.start().copy(ctx(), '/a.txt', '/a', { modeStr: 'u+q' }).apply(State.scratch()));
        expect(bad.message).toMatch(/invalid chmod mode "u\+q"/);
      });

      it('copies the contents of a directory with dirCopyContents, the directory itself without', async () => {
        const contents = await solveAndExport(
          FileChain.start().copy(ctx(), '/dir', '/x', { dirCopyContents: true, createDestPath: true }).apply(State.scratch()),
        );
        expect(names(contents)).toEqual(['x/', 'x/c.md', 'x/sub/', 'x/sub/b.txt']);
        expect(byName(contents, 'x/sub/').mode).toBe(0o750);
        const whole = await solveAndExport(FileChain.start().mkdir('/x', 0o755).copy(ctx(), '/dir', '/x').apply(State.scratch()));
        expect(names(whole)).toEqual(['x/', 'x/dir/', 'x/dir/c.md', 'x/dir/sub/', 'x/dir/sub/b.txt']);
      });

      it('expands wildcards, failing on no match unless allowed', async () => {
        const entries = await solveAndExport(
          FileChain.start().copy(ctx(), '/*.txt', '/w/', { allowWildcard: true, createDestPath: true }).copy(ctx(), '/dir/*/b.*', '/w/', { allowWildcard: true }).apply(State.scratch()),
        );
        expect(names(entries)).toEqual(['w/', 'w/a.txt', 'w/b.txt']);
        const err = await expectRunError(FileChain.start().copy(ctx(), '/*.nope', '/w/', { allowWildcard: true, createDestPath: true }).apply(State.scratch()));
        expect(err.code).toBe('vertex');
        expect(err.message).toMatch(/^failed to copy \/\*\.nope: /);
        const empty = await solveAndExport(
          FileChain.start().mkdir('/w', 0o755).copy(ctx(), '/*.nope', '/w/', { allowWildcard: true, allowEmptyWildcard: true }).apply(State.scratch()),
        );
        expect(names(empty)).toEqual(['w/']);
      });

      it('needs createDestPath to create missing parents of dest', async () => {
        const err = await expectRunError(FileChain.start().copy(ctx(), '/a.txt', '/deep/er/a.txt').apply(State.scratch()));
        expect(err.message).toMatch(/^failed to copy \/a\.txt: /);
        const entries = await solveAndExport(FileChain.start().copy(ctx(), '/a.txt', '/deep/er/a.txt', { createDestPath: true }).apply(State.scratch()));
        expect(names(entries)).toEqual(['deep/', 'deep/er/', 'deep/er/a.txt']);
      });

      it('applies mode, owner and timestamp to every copied entry', async () => {
        const entries = await solveAndExport(
          FileChain.start()
            .copy(ctx(), '/dir', '/m', {
              dirCopyContents: true,
              createDestPath: true,
              mode: 0o700,
              timestamp: 1234n,
              owner: { user: { user: { case: 'id', value: 1000 } }, group: { user: { case: 'id', value: 2000 } } },
            })
            .apply(State.scratch()),
        );
        for (const e of entries.filter((x) => x.name !== 'm/')) {
          expect(e, e.name).toMatchObject({ mode: 0o700, uid: 1000, gid: 2000, mtime: 1234 });
        }
        const keep = await solveAndExport(FileChain.start().copy(ctx(), '/dir/c.md', '/c.md').apply(State.scratch()));
        expect(byName(keep, 'c.md')).toMatchObject({ mode: 0o600, uid: 0, gid: 0, mtime: MTIME });
      });

      it('filters a directory copy with include and exclude patterns', async () => {
        const entries = await solveAndExport(
          FileChain.start()
            .copy(ctx(), '/', '/f', { dirCopyContents: true, createDestPath: true, includePatterns: ['**/*.txt', 'bin'], excludePatterns: ['dir/sub'] })
            .apply(State.scratch()),
        );
        expect(names(entries)).toEqual(['f/', 'f/a.txt', 'f/bin/', 'f/bin/run.sh']);
      });

      it('copies a symlink as a link, or its target with followSymlink', async () => {
        const entries = await solveAndExport(
          FileChain.start().copy(ctx(), '/link', '/asis').copy(ctx(), '/link', '/followed', { followSymlink: true }).apply(State.scratch()),
        );
        expect(byName(entries, 'asis')).toMatchObject({ type: 'symlink', linkname: 'a.txt' });
        expect(byName(entries, 'followed')).toMatchObject({ type: 'file' });
        expect(byName(entries, 'followed').data.toString()).toBe('A');
      });

      it('runs mkdir, mkfile, rm and symlink actions', async () => {
        const s = FileChain.start()
          .mkdir('/a/b', 0o750, { makeParents: true })
          .mkdir('/e', 0o700, { timestamp: 99n })
          .mkfile('/a/b/f', 0o600, new TextEncoder().encode('data'), { timestamp: 77n, owner: { user: { user: { case: 'id', value: 5 } } } })
          .symlink('/a/b/f', '/s')
          .mkfile('/gone', 0o644, new Uint8Array())
          .rm('/gone')
          .rm('/missing', { allowNotFound: true })
          .mkfile('/w1.log', 0o644, new Uint8Array())
          .mkfile('/w2.log', 0o644, new Uint8Array())
          .rm('/*.log', { allowWildcard: true })
          .apply(ctx());
        const entries = await solveAndExport(s);
        expect(names(entries)).toEqual(['a/', 'a/b/', 'a/b/f', 'a.txt', 'bin/', 'bin/run.sh', 'dir/', 'dir/c.md', 'dir/sub/', 'dir/sub/b.txt', 'e/', 'link', 's']);
        expect(byName(entries, 'a/')).toMatchObject({ type: 'directory', mode: 0o750 });
        expect(byName(entries, 'a/b/')).toMatchObject({ type: 'directory', mode: 0o750 });
        expect(byName(entries, 'e/')).toMatchObject({ mode: 0o700, mtime: 99 });
        expect(byName(entries, 'a/b/f')).toMatchObject({ mode: 0o600, mtime: 77, uid: 5, gid: 5 });
        expect(byName(entries, 'a/b/f').data.toString()).toBe('data');
        expect(byName(entries, 's')).toMatchObject({ type: 'symlink', linkname: '/a/b/f' });
      });

      it('fails rm of a missing path and mkdir without parents as VertexErrors', async () => {
        const rmErr = await expectRunError(FileChain.start().rm('/missing').apply(ctx()));
        expect(rmErr.message).toBe('failed to remove /missing: no such file or directory');
        const mkErr = await expectRunError(FileChain.start().mkdir('/no/parent', 0o755).apply(State.scratch()));
        expect(mkErr.message).toBe('failed to create directory /no/parent: no such file or directory');
      });

      it('reports a missing copy source as a VertexError with the digest', async () => {
        const s = FileChain.start().copy(ctx(), '/nope.txt', '/x').apply(State.scratch());
        const err = await expectRunError(s);
        expect(err.code).toBe('vertex');
        expect(err.details.digest).toBe(s.output!.vertex.marshal().digest);
        expect(err.message).toBe('failed to copy /nope.txt: no such file or directory');
      });
    });

    describe('export', () => {
      it('writes entries sorted, directories before their contents, hardlinks as links', async () => {
        const entries = await solveAndExport(
          FileChain.start().mkdir('/z', 0o755).mkfile('/z/a', 0o644, new Uint8Array([1])).mkdir('/a-b', 0o755).mkfile('/a', 0o644, new Uint8Array()).apply(State.scratch()),
        );
        expect(names(entries)).toEqual(['a', 'a-b/', 'z/', 'z/a']);
      });

      it('gives the same bytes for the same tree', async () => {
        const build = () => FileChain.start().copy(ctx(), '/', '/', { dirCopyContents: true }).mkfile('/new', 0o644, new Uint8Array([1, 2]), { timestamp: 5n }).apply(State.scratch());
        const r1 = await solve(worker, build());
        const bytes1 = await collect(worker.exportRef(r1!));
        // A second solve transfers the directory again: new snapshots, same content.
        const r3 = await solve(worker, build(), { buildId: 'other' });
        const bytes3 = await collect(worker.exportRef(r3!));
        expect(bytes3.equals(bytes1)).toBe(true);
        expect(bytes1.byteLength % 512).toBe(0);
        expect(r3).not.toBe(r1);
        await worker.release([r1!, r3!]);
      });
    });

    describe('refs and errors', () => {
      it('runs an identical op again (the solver decides what is cached) and counts references per ref', async () => {
        const s = FileChain.start().mkfile('/f', 0o644, new Uint8Array([1])).apply(State.scratch());
        const r1 = await solve(worker, s);
        const r2 = await solve(worker, s);
        expect(r2).not.toBe(r1);
        await worker.release([r2!]);
        expect(names(await exportOf(r1))).toEqual(['f']);
        await expect(collect(worker.exportRef(r2!))).rejects.toMatchObject({ code: 'not_found' });
        await worker.release([r1!]);
        await expect(collect(worker.exportRef(r1!))).rejects.toMatchObject({ code: 'not_found' });
        await worker.release([r1!]); // unknown refs are ignored
      });

      it('rejects unknown input refs with NotFoundError', async () => {
        const op = create(llb.OpSchema, { inputs: [{ digest: `sha256:${'0'.repeat(64)}`, index: 0n }], op: { case: 'file', value: { actions: [{ input: 0n, secondaryInput: -1n, output: 0n, action: { case: 'rm', value: { path: '/x', allowNotFound: true } } }] } } });
        const bytes = marshalOp(op);
        await expect(
          worker.run({ buildId: 'b', sessionId: 's', vertexDigest: digestOf(bytes), op: bytes, inputRefs: ['ref-missing'] }),
        ).rejects.toMatchObject({ code: 'not_found' });
      });

      it('rejects unsupported sources and op kinds with UnimplementedError naming them', async () => {
        const s = source('svn://example.invalid/repo', {});
        const err = await expectRunError(s);
        expect(err.code).toBe('unimplemented');
        expect(err.message).toContain('svn://example.invalid/repo');
        expect(err.details.digest).toBe(s.output!.vertex.marshal().digest);
        const diff = marshalOp(create(llb.OpSchema, { op: { case: 'diff', value: { lower: 0n, upper: 1n } } }));
        await expect(worker.run({ buildId: 'b', sessionId: 's', vertexDigest: digestOf(diff), op: diff, inputRefs: [] })).rejects.toMatchObject({
          code: 'unimplemented',
          message: expect.stringContaining('diff'),
        });
      });

      it('rejects a canceled run with CanceledError', async () => {
        const ac = new AbortController();
        ac.abort();
        await expect(solve(worker, ctx(), { signal: ac.signal })).rejects.toMatchObject({ code: 'canceled' });
      });
    });

    whenMode('unimplemented', it)('rejects exec ops with UnimplementedError', async () => {
      const s = execState(FileChain.start().mkdir('/bin', 0o755).apply(State.scratch()), ['/bin/true']);
      const err = await expectRunError(s);
      expect(err.code).toBe('unimplemented');
      expect(err.message).toMatch(/^exec ops are not supported yet/);
      expect(err.details.digest).toBe(s.output!.vertex.marshal().digest);
    });

    whenMode('run', describe)('exec ops (needs a runtime and /bin/busybox)', () => {
      const rootfs = () => local('rootfs');

      it('runs a process on the root mount, commits it and publishes its output', async () => {
        const s = execState(rootfs(), ['/bin/sh', '-c', 'echo hello; echo oops >&2; mkdir -p /out && echo done > /out/f'], { cwd: '/work' });
        const entries = await solveAndExport(s);
        expect(byName(entries, 'out/f').data.toString()).toBe('done\n');
        expect(names(entries)).toContain('work/');
        for (const stub of ['proc/', 'dev/', 'sys/']) expect(names(entries)).not.toContain(stub);
        const logs = collector.events.filter((e) => e.event.event.case === 'log');
        const text = (stream: number) =>
          Buffer.concat(logs.map((e) => e.event.event.value as events.VertexLog).filter((l) => l.stream === stream).map((l) => Buffer.from(l.msg))).toString();
        expect(text(1)).toBe('hello\n');
        expect(text(2)).toBe('oops\n');
        expect(logs[0]!.subject).toBe(workerProgressSubject(worker.id, 'build-1', 'log'));
      });

      it('fails with a VertexError naming the exit code', async () => {
        const s = execState(rootfs(), ['/bin/sh', '-c', 'exit 3']);
        const err = await expectRunError(s);
        expect(err.code).toBe('vertex');
        expect(err.details.digest).toBe(s.output!.vertex.marshal().digest);
        expect(err.message).toBe('process "/bin/sh -c exit 3" did not complete successfully: exit code: 3');
      });

      it('puts the exit code and the last 10 lines of output in the error details of a failed step', async () => {
        const err = await expectRunError(execState(rootfs(), ['/bin/sh', '-c', 'for i in $(seq 1 15); do echo line$i; done; exit 7']));
        expect(err.message).toMatch(/did not complete successfully: exit code: 7$/);
        expect(err.details).toMatchObject({ exitCode: 7, output: [6, 7, 8, 9, 10, 11, 12, 13, 14, 15].map((i) => `line${i}`).join('\n') });
      });

      it('resolves users by name with their supplementary groups; an explicit group drops them', async () => {
        const probe = 'id -u > /tmp/u; id -g >> /tmp/u; id -G >> /tmp/u';
        const named = await solveAndExport(execState(rootfs(), ['/bin/sh', '-c', probe], { user: 'app' }));
        expect(byName(named, 'tmp/u').data.toString()).toBe('1000\n1001\n1001 2000\n');
        const withGroup = await solveAndExport(execState(rootfs(), ['/bin/sh', '-c', probe], { user: 'app:extra' }));
        expect(byName(withGroup, 'tmp/u').data.toString()).toBe('1000\n2000\n2000\n');
        const err = await expectRunError(execState(rootfs(), ['/bin/true'], { user: 'nobody-here' }));
        expect(err.message).toMatch(/unable to find user nobody-here/);
      });

      it('sets the env over a default PATH, and creates the working directory', async () => {
        const entries = await solveAndExport(
          execState(rootfs(), ['/bin/sh', '-c', 'echo "$PATH" > /tmp/env; echo "$A" >> /tmp/env; pwd >> /tmp/env; echo x > rel'], { env: ['A=one two'], cwd: '/work/deep' }),
        );
        expect(byName(entries, 'tmp/env').data.toString()).toBe('/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\none two\n/work/deep\n');
        expect(byName(entries, 'work/deep/rel').data.toString()).toBe('x\n');
        const own = await solveAndExport(execState(rootfs(), ['/bin/sh', '-c', 'echo "$PATH" > /tmp/env'], { env: ['PATH=/bin'] }));
        expect(byName(own, 'tmp/env').data.toString()).toBe('/bin\n');
      });

      it('sandboxes a step: default capabilities, seccomp, read-only /sys, ulimits', async () => {
        const probe = 'grep -E "^(CapEff|Seccomp):" /proc/self/status > /tmp/s; grep " /sys " /proc/mounts | cut -d" " -f4 | cut -d, -f1 >> /tmp/s; ulimit -n >> /tmp/s; hostname >> /tmp/s';
        const entries = await solveAndExport(execOp(rootfs(), ['/bin/sh', '-c', probe], { ulimits: [{ name: 'nofile', soft: 2048, hard: 4096 }], hostname: 'box' }));
        // Docker's and BuildKit's default capability set.
        expect(byName(entries, 'tmp/s').data.toString()).toBe('CapEff:\t00000000a80425fb\nSeccomp:\t2\nro\n2048\nbox\n');
        const err = await expectRunError(execOp(rootfs(), ['/bin/true'], { ulimits: [{ name: 'bogus', soft: 1, hard: 1 }] }));
        expect(err.message).toMatch(/unknown ulimit "bogus"/);
      });

      it('refuses insecure and host-network steps unless the build and the daemon allow them', async () => {
        const insecure = execOp(rootfs(), ['/bin/true'], { security: 'insecure' });
        const host = execOp(rootfs(), ['/bin/true'], { network: 'host' });
        const denied = async (w: Worker, s: State, entitlements: string[]) => {
          const err = await solve(w, s, { entitlements }).catch((e: unknown) => e);
          expect(err).toBeInstanceOf(KilnError);
          return err as KilnError;
        };
        // The daemon permits nothing by default, whatever the build asks for.
        expect(await denied(worker, insecure, ['security.insecure'])).toMatchObject({ code: 'permission_denied', message: expect.stringMatching(/security\.insecure.*daemon/) });
        expect(await denied(worker, host, ['network.host'])).toMatchObject({ code: 'permission_denied', message: expect.stringMatching(/network\.host.*daemon/) });
        const permissive = await newWorker({ root: path.join(root, 'permissive'), allowedEntitlements: ['security.insecure', 'network.host'] });
        expect(await denied(permissive, insecure, [])).toMatchObject({ code: 'permission_denied', message: expect.stringContaining('--allow security.insecure') });
        expect(await denied(permissive, host, ['security.insecure'])).toMatchObject({ code: 'permission_denied', message: expect.stringContaining('--allow network.host') });
        // An identical step run before with the entitlement is not handed to a request without it.
        const ref = await solve(permissive, insecure, { entitlements: ['security.insecure'] });
        expect(ref).toBeTruthy();
        expect(await denied(permissive, insecure, [])).toMatchObject({ code: 'permission_denied', message: expect.stringContaining('--allow security.insecure') });
        await permissive.release([ref!]);
      });

      it('mounts a secret file in a tmpfs and a secret env var, neither left in the result', async () => {
        session.secrets.set('tok', new TextEncoder().encode('s3cr3t'));
        const s = execOp(rootfs(), ['/bin/sh', '-c', 'cat /run/secrets/tok > /got; stat -c "%a %u %g" /run/secrets/tok > /st; echo "$TOKEN" > /env; grep " /run/secrets/tok " /proc/mounts | cut -d" " -f3 > /fstype'], {
          mounts: [{ dest: '/run/secrets/tok', type: 'secret', secret: { id: 'tok', uid: 1000, gid: 1001, mode: 0o440 } }],
          secretEnv: [{ id: 'tok', name: 'TOKEN' }],
        });
        const entries = await solveAndExport(s);
        expect(byName(entries, 'got').data.toString()).toBe('s3cr3t');
        expect(byName(entries, 'env').data.toString()).toBe('s3cr3t\n');
        expect(byName(entries, 'st').data.toString()).toBe('440 1000 1001\n');
        expect(byName(entries, 'fstype').data.toString()).toBe('tmpfs\n');
        // The mount point and its parents are stubs: gone from the result.
        expect(names(entries).filter((x) => x.startsWith('run/'))).toEqual([]);
        expect(names(entries)).not.toContain('run/');
        // Nothing of the secret tmpfs stays mounted on the host.
        expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(root);
      });

      it('fails on a missing required secret and skips a missing optional one', async () => {
        const err = await expectRunError(execOp(rootfs(), ['/bin/true'], { mounts: [{ dest: '/run/secrets/nope', type: 'secret', secret: { id: 'nope' } }] }));
        expect(err.message).toMatch(/secret nope: not found/);
        const entries = await solveAndExport(
          execOp(rootfs(), ['/bin/sh', '-c', 'test -e /run/secrets/nope || echo absent > /r'], { mounts: [{ dest: '/run/secrets/nope', type: 'secret', secret: { id: 'nope', optional: true } }] }),
        );
        expect(byName(entries, 'r').data.toString()).toBe('absent\n');
      });

      it('keeps cache mounts across builds and worker restarts, seeded once from their input', async () => {
        const seed = FileChain.start().mkdir('/c', 0o750, { owner: { user: { user: { case: 'id', value: 1000 } }, group: { user: { case: 'id', value: 1001 } } } }).apply(State.scratch());
        const step = (n: number) =>
          execOp(rootfs(), ['/bin/sh', '-c', `echo ${n} >> /cache/log; cat /cache/log > /seen; stat -c "%a %u %g" /cache > /st`], {
            mounts: [{ dest: '/cache', type: 'cache', state: seed, selector: '/c', cache: { id: 'conf-cache' } }],
          });
        const first = await solveAndExport(step(1));
        expect(byName(first, 'seen').data.toString()).toBe('1\n');
        expect(byName(first, 'st').data.toString()).toBe('750 1000 1001\n');
        expect(names(first)).not.toContain('cache/log');
        await worker.close();
        worker = await makeWorker({ root, sessions: session.client, publish: collector.publish, logger: silentLogger() });
        const second = await solveAndExport(step(2));
        expect(byName(second, 'seen').data.toString()).toBe('1\n2\n');
      });

      it('mounts only the source= subdirectory of a cache, and refuses one a symlink leads out of the cache', async () => {
        const cache = (source: string | undefined, script: string) =>
          execOp(rootfs(), ['/bin/sh', '-c', script], { mounts: [{ dest: '/c', type: 'cache', selector: source, cache: { id: 'conf-source' } }] });
        await solveAndExport(cache(undefined, 'mkdir -p /c/sub && echo in-sub > /c/sub/f && echo top > /c/top'));
        const sub = await solveAndExport(cache('/sub', 'ls /c > /seen; echo new > /c/g'));
        expect(byName(sub, 'seen').data.toString()).toBe('f\n');
        const whole = await solveAndExport(cache(undefined, 'ls /c > /seen; cat /c/sub/g >> /seen'));
        expect(byName(whole, 'seen').data.toString()).toBe('sub\ntop\nnew\n');
        // A missing source is created empty inside the cache.
        expect(byName(await solveAndExport(cache('/fresh/deep', 'ls -A /c > /seen')), 'seen').data.toString()).toBe('');
        // The attack: a step plants links in the cache, a later step mounts through them.
        await solveAndExport(cache(undefined, 'ln -s /etc /c/abs && ln -s ../../.. /c/up && ln -s sub /c/inside'));
        for (const source of ['/abs', '/up', '/abs/x']) {
          const err = await expectRunError(cache(source, 'ls /c > /seen'));
          expect(err.message).toMatch(/failed to mount cache "conf-source" at \/c: source "\/(abs|up)[^"]*" (resolves through the symlink|leaves the cache)/);
        }
        // A link that stays inside the cache is followed.
        expect(byName(await solveAndExport(cache('/inside', 'ls /c > /seen')), 'seen').data.toString()).toBe('f\ng\n');
      });

      it('runs as root with the groups root is in from /etc/group by default; the primary gid is always in the list', async () => {
        const probe = 'id -u > /tmp/u; id -g >> /tmp/u; grep ^Groups: /proc/self/status | cut -f2 >> /tmp/u';
        const asRoot = await solveAndExport(execState(rootfs(), ['/bin/sh', '-c', probe]));
        expect(byName(asRoot, 'tmp/u').data.toString()).toBe('0\n0\n0 10 \n');
        const numeric = await solveAndExport(execState(rootfs(), ['/bin/sh', '-c', probe], { user: '1000:1234' }));
        expect(byName(numeric, 'tmp/u').data.toString()).toBe('1000\n1234\n1234 \n');
      });

      it('serialises locked cache users and gives private users their own directory when busy', async () => {
        const use = (sharing: 'locked' | 'private', tag: string) =>
          execOp(rootfs(), ['/bin/sh', '-c', `echo start-${tag} >> /c/log; sleep 0.3; echo end-${tag} >> /c/log; cat /c/log > /seen`], {
            mounts: [{ dest: '/c', type: 'cache', cache: { id: `conf-${sharing}`, sharing } }],
          });
        const [a, b] = await Promise.all([solveAndExport(use('locked', 'a')), solveAndExport(use('locked', 'b'))]);
        const last = [byName(a, 'seen'), byName(b, 'seen')].map((e) => e.data.toString()).sort((x, y) => x.length - y.length)[1]!;
        // One ran after the other: never two starts in a row.
        expect(last).toMatch(/^start-(a|b)\nend-\1\nstart-(a|b)\nend-\2\n$/);
        const [p, q] = await Promise.all([solveAndExport(use('private', 'p')), solveAndExport(use('private', 'q'))]);
        expect(byName(p, 'seen').data.toString()).toBe('start-p\nend-p\n');
        expect(byName(q, 'seen').data.toString()).toBe('start-q\nend-q\n');
      });

      it('runs an allowed insecure step privileged and a host-network step in the host namespace', async () => {
        const permissive = await newWorker({ root: path.join(root, 'permissive'), allowedEntitlements: ['security.insecure', 'network.host'] });
        const probe = 'grep -E "^(CapEff|Seccomp):" /proc/self/status > /tmp/s; grep " /sys " /proc/mounts | cut -d" " -f4 | cut -d, -f1 >> /tmp/s';
        const priv = await readTar(permissive.exportRef((await solve(permissive, execOp(rootfs(), ['/bin/sh', '-c', probe], { security: 'insecure' }), { entitlements: ['security.insecure'] }))!));
        // Every capability this (root) process may hand out, like docker run --privileged.
        const bounding = /^CapBnd:\t(\w+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1];
        expect(byName(priv, 'tmp/s').data.toString()).toBe(`CapEff:\t${bounding}\nSeccomp:\t0\nrw\n`);
        const hostNet = await readTar(
          permissive.exportRef((await solve(permissive, execOp(rootfs(), ['/bin/sh', '-c', 'ls /sys/class/net > /tmp/net'], { network: 'host' }), { entitlements: ['network.host'] }))!),
        );
        expect(byName(hostNet, 'tmp/net').data.toString().trim().split(/\s+/).sort()).toEqual(readdirSync('/sys/class/net').sort());
      });

      it('mounts inputs read-only with a selector, and tmpfs', async () => {
        const s = execState(rootfs(), ['/bin/sh', '-c', 'cat /src/b.txt > /got && echo t > /scratch/t && ! echo x > /src/new'], {
          mounts: [
            { dest: '/src', state: ctx(), selector: '/dir/sub', readonly: true },
            { dest: '/scratch', tmpfs: true },
          ],
        });
        const entries = await solveAndExport(s);
        expect(byName(entries, 'got').data.toString()).toBe('B');
        expect(names(entries)).not.toContain('scratch/t');
      });

      it('mounts an input read-write: changes are discarded, unless the mount is an output of its own', async () => {
        const cmd = 'echo new > /scratch/new && rm /scratch/b.txt && echo out > /kept/new && rm /kept/b.txt && ls /scratch > /scratch.ls';
        const s = execState(rootfs(), ['/bin/sh', '-c', cmd], {
          mounts: [
            { dest: '/scratch', state: ctx(), selector: '/dir/sub' },
            { dest: '/kept', state: ctx(), selector: '/dir/sub', output: true },
          ],
        });
        const root = await solveAndExport(s);
        expect(byName(root, 'scratch.ls').data.toString()).toBe('new\n');
        expect(names(root).filter((n) => n.startsWith('scratch/') || n.startsWith('kept/'))).toEqual([]);
        // The output mount commits the whole input tree with the step's changes at the selected path.
        const kept = await solveAndExport(outputOf(s, 1));
        expect(byName(kept, 'dir/sub/new').data.toString()).toBe('out\n');
        expect(names(kept)).not.toContain('dir/sub/b.txt');
        expect(names(kept)).toContain('a.txt');
        // The input itself is untouched.
        expect(byName(await solveAndExport(ctx()), 'dir/sub/b.txt').data.toString()).toBe('B');
      });

      it('removes mount-point stubs inside the rootfs only: a parent swapped for a symlink to the host leaves the host alone', async () => {
        // CVE-2024-23652's class: the host tree looks exactly like the stubs below the swapped parent.
        const host = await mkdtemp(path.join(tmpdir(), 'kiln-conf-host-'));
        try {
          await mkdir(path.join(host, 'etc/t'), { recursive: true });
          await writeFile(path.join(host, 'etc/s'), '');
          session.secrets.set('stub', new TextEncoder().encode('x'));
          const s = execOp(rootfs(), ['/bin/sh', '-c', `mv /x /x.old && ln -s ${host} /x && echo ok > /r`], {
            mounts: [
              { dest: '/x/etc/t', type: 'tmpfs' },
              { dest: '/x/etc/s', type: 'secret', secret: { id: 'stub' } },
            ],
          });
          const entries = await solveAndExport(s);
          expect(byName(entries, 'r').data.toString()).toBe('ok\n');
          expect(byName(entries, 'x').linkname).toBe(host);
          expect((await lstat(path.join(host, 'etc/t'))).isDirectory()).toBe(true);
          expect((await lstat(path.join(host, 'etc/s'))).isFile()).toBe(true);
        } finally {
          await rm(host, { recursive: true, force: true });
        }
      });

      it('enforces the size of a tmpfs mount', async () => {
        const s = execOp(rootfs(), ['/bin/sh', '-c', 'dd if=/dev/zero of=/scratch/f bs=1024 count=2048 2>/dev/null; echo $? > /rc; wc -c < /scratch/f > /size'], {
          mounts: [{ dest: '/scratch', type: 'tmpfs', tmpfsSizeBytes: 1024 * 1024 }],
        });
        const entries = await solveAndExport(s);
        expect(byName(entries, 'rc').data.toString()).not.toBe('0\n');
        expect(Number(byName(entries, 'size').data.toString())).toBe(1024 * 1024);
      });

      it('writes /etc/hosts with the hostname and extra hosts, leaving no stub behind', async () => {
        const s = execOp(rootfs(), ['/bin/sh', '-c', 'cat /etc/hosts > /tmp/hosts; hostname >> /tmp/hosts; ! echo x >> /etc/hosts'], {
          hostname: 'box',
          extraHosts: [
            { host: 'db.internal', ip: '10.1.2.3' },
            { host: 'v6.internal', ip: 'fd00::1' },
          ],
        });
        const entries = await solveAndExport(s);
        expect(byName(entries, 'tmp/hosts').data.toString()).toBe('127.0.0.1\tlocalhost box\n::1\tlocalhost ip6-localhost ip6-loopback\n10.1.2.3\tdb.internal\nfd00::1\tv6.internal\nbox\n');
        expect(names(entries)).not.toContain('etc/hosts');
        const err = await expectRunError(execOp(rootfs(), ['/bin/true'], { extraHosts: [{ host: 'bad host', ip: '1.2.3.4' }] }));
        expect(err.message).toMatch(/invalid extra host name "bad host"/);
      });

      const sshAgentIt = hasSshAgent() ? it : it.skip;
      sshAgentIt('forwards the client SSH agent through the session to a socket in the step (needs openssh-client)', async () => {
        const agent = await startSshAgent(path.join(base, `agent-${n}`));
        try {
          session.sshAgents.set('default', agent.socket);
          session.dirs.set('sshclient', { dir: await sshAddClient(path.join(base, 'sshclient')) });
          const listKeys = '/ssh/ld.so --library-path /ssh/lib /ssh/ssh-add -l > /keys; echo $? >> /keys';
          const s = execOp(rootfs(), ['/bin/sh', '-c', `${listKeys}; stat -c "%a %u %g" "$SSH_AUTH_SOCK" > /st; test -S "$SSH_AUTH_SOCK" && echo socket >> /st`], {
            env: ['SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0'],
            mounts: [
              { dest: '/ssh', state: local('sshclient'), readonly: true },
              { dest: '/run/buildkit/ssh_agent.0', type: 'ssh', ssh: { uid: 1000, gid: 1001, mode: 0o660 } },
            ],
          });
          const entries = await solveAndExport(s);
          // The agent answered "request identities" with the key it holds: a full round trip.
          expect(byName(entries, 'keys').data.toString()).toBe(`${agent.fingerprint}\n0\n`);
          expect(byName(entries, 'st').data.toString()).toBe('660 1000 1001\nsocket\n');
          expect(names(entries).filter((x) => x.startsWith('run'))).toEqual([]);
          const err = await expectRunError(execOp(rootfs(), ['/bin/true'], { mounts: [{ dest: '/run/other', type: 'ssh', ssh: { id: 'other' } }] }));
          expect(err.message).toMatch(/no SSH agent "other" was forwarded for the ssh mount at \/run\/other \(pass --ssh other\)/);
          const optional = await solveAndExport(
            execOp(rootfs(), ['/bin/sh', '-c', 'test -e /run/other || echo absent > /r'], { mounts: [{ dest: '/run/other', type: 'ssh', ssh: { id: 'other', optional: true } }] }),
          );
          expect(byName(optional, 'r').data.toString()).toBe('absent\n');
        } finally {
          agent.stop();
        }
      });

      it('kills the process when the run is canceled', async () => {
        const ac = new AbortController();
        const started = Date.now();
        const timer = setTimeout(() => ac.abort(), 500);
        const err = await solve(worker, execState(rootfs(), ['/bin/sh', '-c', 'sleep 30']), { signal: ac.signal }).catch((e: unknown) => e);
        clearTimeout(timer);
        expect(err).toMatchObject({ code: 'canceled' });
        expect(Date.now() - started).toBeLessThan(10_000);
      });

      it('runs as the requested user with a sandboxed network', async () => {
        const s = execState(rootfs(), ['/bin/sh', '-c', 'id -u > /tmp/uid; id -g > /tmp/gid; ls /sys/class/net > /tmp/net'], { user: '1234:5678' });
        const entries = await solveAndExport(s);
        expect(byName(entries, 'tmp/uid')).toMatchObject({ uid: 1234, gid: 5678 });
        expect(byName(entries, 'tmp/uid').data.toString()).toBe('1234\n');
        expect(byName(entries, 'tmp/gid').data.toString()).toBe('5678\n');
        expect(byName(entries, 'tmp/net').data.toString().trim().split(/\s+/)).toEqual(['lo']);
      });
    });
  });
}

type TreeSpec = Record<string, { data?: string; mode?: number } | { symlink: string }>;

/** Writes a fixture tree; names ending in "/" are directories; every mtime is MTIME. */
async function writeTree(root: string, spec: TreeSpec): Promise<void> {
  await mkdir(root, { recursive: true });
  for (const [name, e] of Object.entries(spec)) {
    const p = path.join(root, name);
    if ('symlink' in e) await symlink(e.symlink, p);
    else if (name.endsWith('/')) await mkdir(p, { recursive: true });
    else await writeFile(p, e.data ?? '');
    if (!('symlink' in e)) await chmod(p, e.mode ?? 0o644);
  }
  // Children first, so setting a file's time does not touch its directory's afterwards.
  for (const name of Object.keys(spec).sort().reverse()) {
    const p = path.join(root, name);
    if ((await lstat(p)).isSymbolicLink()) continue;
    await utimes(p, MTIME, MTIME);
  }
  await utimes(root, MTIME, MTIME);
}

/** A minimal rootfs: the host's static busybox and the applets the exec cases use. */
async function makeBusyboxRootfs(dir: string): Promise<string> {
  await mkdir(path.join(dir, 'bin'), { recursive: true });
  await mkdir(path.join(dir, 'etc'), { recursive: true });
  await mkdir(path.join(dir, 'tmp'), { recursive: true });
  await chmod(path.join(dir, 'tmp'), 0o1777);
  await copyFile('/bin/busybox', path.join(dir, 'bin/busybox'));
  await chmod(path.join(dir, 'bin/busybox'), 0o755);
  const applets = ['sh', 'cat', 'echo', 'mkdir', 'id', 'ls', 'sleep', 'true', 'grep', 'cut', 'seq', 'hostname', 'pwd', 'stat', 'nc', 'touch', 'test', 'env', 'wc', 'dd', 'mv', 'ln', 'rm'];
  for (const applet of applets) await symlink('busybox', path.join(dir, 'bin', applet));
  await writeFile(path.join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n');
  await writeFile(path.join(dir, 'etc/group'), 'root:x:0:\nwheel:x:10:root\napp:x:1001:\nextra:x:2000:app\n');
  return dir;
}
