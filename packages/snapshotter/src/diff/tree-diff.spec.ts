import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, chown, link, lutimes, mkdir, mkdtemp, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { diffTrees, planTreeDiff } from './tree-diff.js';
import { parseGetfattr, readTreeXattrs } from './xattrs.js';

async function tarOf(parent: string | undefined, child: string, opts: { sourceDateEpoch?: number; xattrs?: boolean } = {}): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  const x = opts.xattrs ? { parentXattrs: parent ? await readTreeXattrs(parent) : undefined, childXattrs: await readTreeXattrs(child) } : {};
  for await (const c of diffTrees(parent, child, { ...opts, ...x })) parts.push(c);
  return Buffer.concat(parts);
}

/** GNU tar's verbose listing as [type+mode, owner, name, link?] rows. */
function gnuList(tar: Buffer): string[][] {
  const out = execFileSync('tar', ['--numeric-owner', '--full-time', '-tvf', '-'], { input: tar }).toString('utf8');
  return out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const f = line.split(/\s+/);
      // perms owner size date time name [-> target | link to target]
      return [f[0]!, f[1]!, f.slice(5).join(' ')];
    });
}

const T = new Date('2024-01-02T03:04:05.123Z');

describe('tree diff', () => {
  let root: string;
  let lower: string;
  let upper: string;
  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'kiln-diff-'));
    lower = path.join(root, 'lower');
    upper = path.join(root, 'upper');
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  /** Writes the same base tree into both dirs with identical metadata (like a snapshot copy). */
  async function base(dir: string): Promise<void> {
    await mkdir(path.join(dir, 'etc/conf.d'), { recursive: true });
    await mkdir(path.join(dir, 'gone/deep'), { recursive: true });
    await mkdir(path.join(dir, 'usr/bin'), { recursive: true });
    await writeFile(path.join(dir, 'etc/hosts'), 'hosts');
    await writeFile(path.join(dir, 'etc/conf.d/a'), 'a');
    await writeFile(path.join(dir, 'gone/deep/x'), 'x');
    await writeFile(path.join(dir, 'usr/bin/tool'), 'tool');
    await writeFile(path.join(dir, 'old'), 'old');
    await symlink('/usr/bin/tool', path.join(dir, 'usr/bin/alias'));
    await lutimes(path.join(dir, 'usr/bin/alias'), T, T);
    for (const p of ['etc/hosts', 'etc/conf.d/a', 'gone/deep/x', 'usr/bin/tool', 'old', 'gone/deep', 'gone', 'etc/conf.d', 'etc', 'usr/bin', 'usr']) {
      await utimes(path.join(dir, p), T, T);
    }
  }

  it('writes a whole tree without a parent, sorted and deterministic', async () => {
    await base(upper);
    const a = await tarOf(undefined, upper);
    const b = await tarOf(undefined, upper);
    expect(a.equals(b)).toBe(true);
    expect(gnuList(a).map((r) => r[2])).toEqual([
      'etc/',
      'etc/conf.d/',
      'etc/conf.d/a',
      'etc/hosts',
      'gone/',
      'gone/deep/',
      'gone/deep/x',
      'old',
      'usr/',
      'usr/bin/',
      'usr/bin/alias -> /usr/bin/tool',
      'usr/bin/tool',
    ]);
  });

  it('writes changes with parent dirs, whiteouts for deletions and hardlinks', async () => {
    await base(lower);
    await base(upper);
    // modify, add, delete a file and a whole dir, change mode and owner
    await writeFile(path.join(upper, 'etc/hosts'), 'hosts2');
    await writeFile(path.join(upper, 'usr/bin/new'), 'new');
    await link(path.join(upper, 'usr/bin/new'), path.join(upper, 'usr/bin/new-link'));
    await rm(path.join(upper, 'old'));
    await rm(path.join(upper, 'gone'), { recursive: true });
    await chmod(path.join(upper, 'etc/conf.d/a'), 0o600);
    await chown(path.join(upper, 'usr/bin/tool'), 1000, 1001);
    await utimes(path.join(upper, 'etc'), T, T); // etc's own metadata unchanged: written as a parent only
    const tar = await tarOf(lower, upper);
    expect(gnuList(tar)).toEqual([
      ['-rw-r--r--', '0/0', '.wh.gone'],
      ['-rw-r--r--', '0/0', '.wh.old'],
      ['drwxr-xr-x', '0/0', 'etc/'],
      ['drwxr-xr-x', '0/0', 'etc/conf.d/'],
      ['-rw-------', '0/0', 'etc/conf.d/a'],
      ['-rw-r--r--', '0/0', 'etc/hosts'],
      ['drwxr-xr-x', '0/0', 'usr/'],
      ['drwxr-xr-x', '0/0', 'usr/bin/'],
      ['-rw-r--r--', '0/0', 'usr/bin/new'],
      ['hrw-r--r--', '0/0', 'usr/bin/new-link link to usr/bin/new'],
      ['-rw-r--r--', '1000/1001', 'usr/bin/tool'],
    ]);
    expect((await tarOf(lower, upper)).equals(tar)).toBe(true);
  });

  it('is empty when nothing changed, and compares contents of files with whole-second mtimes', async () => {
    await base(lower);
    await base(upper);
    expect(planTreeDiff(lower, upper).entries).toBe(0);
    expect((await tarOf(lower, upper)).length).toBe(0);
    // same size, same whole-second mtime, other bytes: a truncated timestamp must not hide the change
    const whole = new Date('2024-01-02T03:04:05Z');
    await writeFile(path.join(lower, 'old'), 'abc');
    await writeFile(path.join(upper, 'old'), 'xyz');
    await utimes(path.join(lower, 'old'), whole, whole);
    await utimes(path.join(upper, 'old'), whole, whole);
    await utimes(path.join(lower, '.'), whole, whole);
    await utimes(path.join(upper, '.'), whole, whole);
    expect(gnuList(await tarOf(lower, upper)).map((r) => r[2])).toEqual(['old']);
    await writeFile(path.join(upper, 'old'), 'abc');
    await utimes(path.join(upper, 'old'), whole, whole);
    expect(planTreeDiff(lower, upper).entries).toBe(0);
  });

  it('replaces an entry whose type changed and writes a new dir with its contents', async () => {
    await base(lower);
    await base(upper);
    await rm(path.join(upper, 'old'));
    await mkdir(path.join(upper, 'old'));
    await writeFile(path.join(upper, 'old/inside'), 'i');
    await rm(path.join(upper, 'usr/bin'), { recursive: true });
    await writeFile(path.join(upper, 'usr/bin'), 'now a file');
    await utimes(path.join(upper, 'usr'), T, T);
    const names = gnuList(await tarOf(lower, upper)).map((r) => r[2]);
    expect(names).toEqual(['old/', 'old/inside', 'usr/', 'usr/bin']);
  });

  it('clamps mtimes to source_date_epoch and keeps long names', async () => {
    const long = `${'d'.repeat(120)}/${'f'.repeat(150)}`;
    await mkdir(path.join(upper, 'd'.repeat(120)), { recursive: true });
    await writeFile(path.join(upper, long), 'L');
    const epoch = 1_000_000;
    const tar = await tarOf(undefined, upper, { sourceDateEpoch: epoch });
    const out = execFileSync('tar', ['--full-time', '--utc', '-tvf', '-'], { input: tar }).toString('utf8');
    expect(out).toContain(long);
    for (const line of out.trim().split('\n')) expect(line).toContain('1970-01-12 13:46:40');
    expect(createHash('sha256').update(tar).digest('hex')).toBe(createHash('sha256').update(await tarOf(undefined, upper, { sourceDateEpoch: epoch })).digest('hex'));
  });

  it('compares extended attributes and writes them as SCHILY.xattr pax records GNU tar restores', async () => {
    await base(lower);
    await base(upper);
    const setfattr = (...args: string[]) => execFileSync('setfattr', args);
    // user.* xattrs need a filesystem that supports them (tmpfs and ext4 do)
    setfattr('-n', 'user.kiln', '-v', 'blue', path.join(lower, 'etc/hosts'));
    setfattr('-n', 'user.kiln', '-v', 'green', path.join(upper, 'etc/hosts'));
    setfattr('-n', 'user.bin', '-v', '0x00ff01', path.join(upper, 'old'));
    await utimes(path.join(upper, 'old'), T, T);
    await utimes(path.join(lower, 'old'), T, T);
    // metadata equal, only xattrs differ: without them nothing changed
    expect(planTreeDiff(lower, upper).entries).toBe(0);
    const tar = await tarOf(lower, upper, { xattrs: true });
    expect(gnuList(tar).map((r) => r[2])).toEqual(['etc/', 'etc/hosts', 'old']);
    const out = path.join(root, 'out');
    await mkdir(out);
    execFileSync('tar', ['--xattrs', '--xattrs-include=*', '-C', out, '-xf', '-'], { input: tar });
    expect(execFileSync('getfattr', ['-n', 'user.kiln', '--only-values', path.join(out, 'etc/hosts')]).toString()).toBe('green');
    expect(execFileSync('getfattr', ['-n', 'user.bin', '-e', 'hex', path.join(out, 'old')]).toString()).toContain('user.bin=0x00ff01');
  });

  it('parses getfattr output with escaped names and drops overlay and selinux attributes', () => {
    // getfattr prints a name with one backslash as a\\b, and non-ASCII bytes as octal escapes
    const text = ['# file: /r/a\\\\b', 'user.x=0sAAE=', 'trusted.overlay.opaque="y"', 'security.selinux="ctx"', '', '# file: /r/caf\\303\\251', 'user.y=0x0102', ''].join('\n');
    const m = parseGetfattr(text, '/r');
    expect([...m.keys()]).toEqual(['a\\b', 'café']);
    expect(m.get('a\\b')).toEqual({ 'user.x': Buffer.from([0, 1]) });
    expect(m.get('café')).toEqual({ 'user.y': Buffer.from([1, 2]) });
  });
});
