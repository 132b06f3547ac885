import { parseDebControl, parseApkInstalled, parseNpmPackageJson, parsePythonMetadata, type OsRelease, parseOsRelease } from './parsers.js';
import type { SbomPackage } from './package.js';

/** An entry of a directory listing. */
export interface DirEntry {
  name: string;
  isDirectory: boolean;
}

/**
 * Read access to one filesystem (a build result). Paths are absolute inside
 * it. Both calls return undefined for a path that does not exist (or is not
 * a file / not a directory); other failures throw.
 */
export interface FileAccess {
  readFile(path: string): Promise<Uint8Array | undefined>;
  readDir(path: string): Promise<DirEntry[] | undefined>;
}

export interface ScanOptions {
  /** At most this many directories are listed while looking for node_modules and site-packages (default 4000). */
  maxDirs?: number;
  /** Listings in flight at once (default 16). */
  concurrency?: number;
  signal?: AbortSignal;
}

export interface ScanResult {
  packages: SbomPackage[];
  /** The distribution from /etc/os-release, when there is one. */
  os?: OsRelease;
  /** True when the directory walk stopped at `maxDirs`. */
  truncated: boolean;
}

/** Directories the walk for language packages never enters: kernel filesystems, caches, docs, the package databases themselves. */
const PRUNED = new Set(['/proc', '/sys', '/dev', '/run', '/tmp', '/boot', '/var/cache', '/var/lib/dpkg', '/var/lib/apt', '/lib/apk', '/usr/share', '/usr/include', '/var/log']);

/**
 * Finds the packages installed in a filesystem: Debian's dpkg database
 * (/var/lib/dpkg/status, and /var/lib/dpkg/status.d/* as distroless
 * images keep it), Alpine's /lib/apk/db/installed, npm packages
 * (`node_modules/NAME/package.json`, scoped and nested) and Python
 * distributions (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO` in
 * site-packages or dist-packages). Packages come back sorted by type, name
 * and version, each once.
 */
export async function scanFilesystem(fs: FileAccess, opts: ScanOptions = {}): Promise<ScanResult> {
  const text = async (p: string) => {
    const b = await fs.readFile(p);
    return b === undefined ? undefined : Buffer.from(b).toString('utf8');
  };
  const osText = (await text('/etc/os-release')) ?? (await text('/usr/lib/os-release'));
  const os = osText !== undefined ? parseOsRelease(osText) : undefined;
  const found: SbomPackage[] = [];

  const status = await text('/var/lib/dpkg/status');
  if (status !== undefined) found.push(...parseDebControl(status, '/var/lib/dpkg/status', os, true));
  for (const e of (await fs.readDir('/var/lib/dpkg/status.d')) ?? []) {
    if (e.isDirectory || e.name.endsWith('.md5sums')) continue;
    const p = `/var/lib/dpkg/status.d/${e.name}`;
    const t = await text(p);
    if (t !== undefined) found.push(...parseDebControl(t, p, os, false));
  }
  const apk = await text('/lib/apk/db/installed');
  if (apk !== undefined) found.push(...parseApkInstalled(apk, '/lib/apk/db/installed', os));

  const walk = await walkLanguageDirs(fs, opts);
  for (const dir of walk.nodeModules) found.push(...(await scanNodeModules(fs, dir, text)));
  for (const dir of walk.sitePackages) found.push(...(await scanSitePackages(fs, dir, text)));

  const unique = new Map<string, SbomPackage>();
  for (const p of found) if (!unique.has(`${p.purl}|${p.location}`)) unique.set(`${p.purl}|${p.location}`, p);
  const packages = [...unique.values()].sort((a, b) => a.type.localeCompare(b.type) || a.name.localeCompare(b.name) || a.version.localeCompare(b.version) || a.location.localeCompare(b.location));
  return { packages, ...(os ? { os } : {}), truncated: walk.truncated };
}

/** Breadth-first over the tree (bounded), collecting every top `node_modules` and `site-packages`/`dist-packages` directory. */
async function walkLanguageDirs(fs: FileAccess, opts: ScanOptions): Promise<{ nodeModules: string[]; sitePackages: string[]; truncated: boolean }> {
  const maxDirs = opts.maxDirs ?? 4000;
  const concurrency = opts.concurrency ?? 16;
  const nodeModules: string[] = [];
  const sitePackages: string[] = [];
  let queue = ['/'];
  let listed = 0;
  while (queue.length > 0) {
    opts.signal?.throwIfAborted();
    const next: string[] = [];
    for (let i = 0; i < queue.length; i += concurrency) {
      const batch = queue.slice(i, i + concurrency);
      if (listed + batch.length > maxDirs) return { nodeModules, sitePackages, truncated: true };
      listed += batch.length;
      const listings = await Promise.all(batch.map((d) => fs.readDir(d)));
      for (const [j, entries] of listings.entries()) {
        for (const e of entries ?? []) {
          if (!e.isDirectory) continue;
          const p = batch[j] === '/' ? `/${e.name}` : `${batch[j]}/${e.name}`;
          if (PRUNED.has(p)) continue;
          if (e.name === 'node_modules') nodeModules.push(p);
          else if (e.name === 'site-packages' || e.name === 'dist-packages') sitePackages.push(p);
          else next.push(p);
        }
      }
    }
    queue = next;
  }
  return { nodeModules, sitePackages, truncated: false };
}

/** `DIR/NAME/package.json` and `DIR/@SCOPE/NAME/package.json`, then each package's own node_modules. */
async function scanNodeModules(fs: FileAccess, dir: string, text: (p: string) => Promise<string | undefined>): Promise<SbomPackage[]> {
  const out: SbomPackage[] = [];
  const pending = [dir];
  while (pending.length > 0) {
    const nm = pending.pop()!;
    const pkgDirs: string[] = [];
    for (const e of (await fs.readDir(nm)) ?? []) {
      if (!e.isDirectory || e.name.startsWith('.')) continue;
      if (e.name.startsWith('@')) {
        for (const s of (await fs.readDir(`${nm}/${e.name}`)) ?? []) if (s.isDirectory) pkgDirs.push(`${nm}/${e.name}/${s.name}`);
      } else pkgDirs.push(`${nm}/${e.name}`);
    }
    for (const d of pkgDirs) {
      const json = await text(`${d}/package.json`);
      const pkg = json !== undefined ? parseNpmPackageJson(json, `${d}/package.json`) : undefined;
      if (pkg) out.push(pkg);
      if ((await fs.readDir(`${d}/node_modules`)) !== undefined) pending.push(`${d}/node_modules`);
    }
  }
  return out;
}

async function scanSitePackages(fs: FileAccess, dir: string, text: (p: string) => Promise<string | undefined>): Promise<SbomPackage[]> {
  const out: SbomPackage[] = [];
  for (const e of (await fs.readDir(dir)) ?? []) {
    const file = e.name.endsWith('.dist-info') ? 'METADATA' : e.name.endsWith('.egg-info') ? 'PKG-INFO' : undefined;
    if (!file) continue;
    // An .egg-info may be a file itself (distutils installs).
    const p = e.isDirectory ? `${dir}/${e.name}/${file}` : `${dir}/${e.name}`;
    const t = await text(p);
    const pkg = t !== undefined ? parsePythonMetadata(t, p) : undefined;
    if (pkg) out.push(pkg);
  }
  return out;
}
