import type { SbomPackage } from './package.js';

/** The fields of /etc/os-release that name a distribution. */
export interface OsRelease {
  id: string;
  versionId?: string;
  prettyName?: string;
}

export function parseOsRelease(text: string): OsRelease | undefined {
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) kv.set(m[1]!, m[2]!.replace(/^(["'])(.*)\1$/, '$2'));
  }
  const id = kv.get('ID');
  if (!id) return undefined;
  return { id, ...(kv.get('VERSION_ID') ? { versionId: kv.get('VERSION_ID') } : {}), ...(kv.get('PRETTY_NAME') ? { prettyName: kv.get('PRETTY_NAME') } : {}) };
}

/** purl: percent-encodes what the spec does not allow bare in a name or version. */
const enc = (s: string) => encodeURIComponent(s).replace(/%3A/gi, ':');

function purl(type: string, namespace: string | undefined, name: string, version: string, qualifiers: Record<string, string | undefined> = {}): string {
  const q = Object.entries(qualifiers)
    .filter((e): e is [string, string] => !!e[1])
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${enc(v)}`)
    .join('&');
  return `pkg:${type}/${namespace ? `${namespace}/` : ''}${name}${version ? `@${enc(version)}` : ''}${q ? `?${q}` : ''}`;
}

/** deb822 paragraphs (blank-line separated; continuation lines start with a space). */
function paragraphs(text: string): Map<string, string>[] {
  const out: Map<string, string>[] = [];
  for (const block of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    let last = '';
    for (const line of block.split('\n')) {
      if (/^[ \t]/.test(line)) {
        if (last) fields.set(last, `${fields.get(last)}\n${line.trim()}`);
        continue;
      }
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      last = line.slice(0, colon).trim();
      fields.set(last, line.slice(colon + 1).trim());
    }
    if (fields.size > 0) out.push(fields);
  }
  return out;
}

/**
 * A dpkg status file (or a distroless status.d entry): one package per
 * paragraph; with `installedOnly`, only those whose Status ends in
 * "installed" (removed packages keep config-files paragraphs).
 */
export function parseDebControl(text: string, location: string, os: OsRelease | undefined, installedOnly: boolean): SbomPackage[] {
  const distro = os?.id ?? 'debian';
  return paragraphs(text).flatMap((f) => {
    const name = f.get('Package');
    const version = f.get('Version') ?? '';
    if (!name) return [];
    if (installedOnly && f.has('Status') && !/\binstalled$/.test(f.get('Status')!)) return [];
    const arch = f.get('Architecture');
    const source = f.get('Source')?.replace(/\s*\(.*\)$/, '');
    const pkg: SbomPackage = {
      type: 'deb',
      name,
      version,
      purl: purl('deb', distro, name, version, { arch, distro: os?.versionId ? `${distro}-${os.versionId}` : undefined, upstream: source && source !== name ? source : undefined }),
      location,
      ...(arch ? { arch } : {}),
      ...(f.get('Maintainer') ? { supplier: f.get('Maintainer') } : {}),
      ...(source && source !== name ? { source } : {}),
    };
    return [pkg];
  });
}

/** Alpine's installed database: records of `X:value` lines separated by blank lines (P name, V version, A arch, L license, o origin, m maintainer). */
export function parseApkInstalled(text: string, location: string, os: OsRelease | undefined): SbomPackage[] {
  const distro = os?.id ?? 'alpine';
  return text.split(/\n\s*\n/).flatMap((block) => {
    const f = new Map<string, string>();
    for (const line of block.split('\n')) if (line[1] === ':' && !f.has(line[0]!)) f.set(line[0]!, line.slice(2).trim());
    const name = f.get('P');
    if (!name) return [];
    const version = f.get('V') ?? '';
    const arch = f.get('A');
    const origin = f.get('o');
    const pkg: SbomPackage = {
      type: 'apk',
      name,
      version,
      purl: purl('apk', distro, name, version, { arch, distro: os?.versionId ? `${distro}-${os.versionId}` : undefined, upstream: origin && origin !== name ? origin : undefined }),
      location,
      ...(arch ? { arch } : {}),
      ...(f.get('L') ? { license: f.get('L') } : {}),
      ...(f.get('m') ? { supplier: f.get('m') } : {}),
      ...(origin && origin !== name ? { source: origin } : {}),
    };
    return [pkg];
  });
}

/** A package.json with a name and version; undefined for one without (workspace roots, broken files). */
export function parseNpmPackageJson(text: string, location: string): SbomPackage | undefined {
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (!j || typeof j !== 'object' || typeof j.name !== 'string' || typeof j.version !== 'string' || !j.name) return undefined;
  const [scope, bare] = j.name.startsWith('@') && j.name.includes('/') ? [j.name.slice(0, j.name.indexOf('/')), j.name.slice(j.name.indexOf('/') + 1)] : [undefined, j.name];
  const license = typeof j.license === 'string' ? j.license : typeof (j.license as { type?: unknown } | undefined)?.type === 'string' ? (j.license as { type: string }).type : undefined;
  const author = typeof j.author === 'string' ? j.author : typeof (j.author as { name?: unknown } | undefined)?.name === 'string' ? (j.author as { name: string }).name : undefined;
  return {
    type: 'npm',
    name: j.name,
    version: j.version,
    purl: purl('npm', scope ? enc(scope) : undefined, enc(bare), j.version),
    location,
    ...(license ? { license } : {}),
    ...(author ? { supplier: author } : {}),
  };
}

/** Python core metadata (METADATA / PKG-INFO): RFC 822 headers up to the first blank line. */
export function parsePythonMetadata(text: string, location: string): SbomPackage | undefined {
  const head = text.split(/\r?\n\r?\n/)[0] ?? '';
  const f = new Map<string, string>();
  for (const line of head.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon > 0 && !/^\s/.test(line) && !f.has(line.slice(0, colon))) f.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  const name = f.get('Name');
  const version = f.get('Version');
  if (!name || !version) return undefined;
  // The purl spec's pypi names: lowercased, `_` as `-`.
  const license = f.get('License-Expression') ?? (f.get('License') && f.get('License') !== 'UNKNOWN' ? f.get('License') : undefined);
  return {
    type: 'pypi',
    name,
    version,
    purl: purl('pypi', undefined, enc(name.toLowerCase().replace(/_/g, '-')), version),
    location,
    ...(license ? { license } : {}),
    ...(f.get('Author') ? { supplier: f.get('Author') } : {}),
  };
}
