/**
 * `RUN --mount=...` values, read as BuildKit's instructions package does
 * (CSV fields, `key=value` or bare `ro`/`rw`/`required`), validated per type.
 */
import { suggestWord } from './suggest.js';

export type MountType = 'bind' | 'cache' | 'tmpfs' | 'secret' | 'ssh';
export type ShareMode = 'shared' | 'private' | 'locked';

export interface RunMount {
  type: MountType;
  from: string;
  source: string;
  target: string;
  readOnly: boolean;
  /** `id=`: the cache id, secret id or ssh id. */
  id: string;
  sharing?: ShareMode;
  required: boolean;
  /** Bytes; tmpfs only (0: no limit given). */
  sizeLimit: number;
  mode?: number;
  uid?: number;
  gid?: number;
  /** Secret exposed as this environment variable. */
  env?: string;
}

/** A malformed --mount value; the caller adds file and line. */
export class MountError extends Error {}

const MOUNT_TYPES: readonly MountType[] = ['bind', 'cache', 'tmpfs', 'secret', 'ssh'];
const SHARE_MODES: readonly ShareMode[] = ['shared', 'private', 'locked'];
const ALL_KEYS = ['type', 'from', 'source', 'target', 'readonly', 'id', 'sharing', 'required', 'mode', 'uid', 'gid', 'src', 'dst', 'destination', 'ro', 'rw', 'readwrite', 'size', 'env'];

/** Splits one CSV record (Go encoding/csv rules: `"` quotes fields, `""` is a quote). */
export function splitCsv(value: string): string[] {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    let field = '';
    if (value[i] === '"') {
      i++;
      for (;;) {
        if (i >= value.length) throw new MountError(`failed to parse csv mounts: extraneous or missing " in quoted-field: ${value}`);
        if (value[i] === '"') {
          if (value[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        field += value[i++];
      }
      if (i < value.length && value[i] !== ',') throw new MountError(`failed to parse csv mounts: extraneous or missing " in quoted-field: ${value}`);
    } else {
      const end = value.indexOf(',', i);
      field = end < 0 ? value.slice(i) : value.slice(i, end);
      if (field.includes('"')) throw new MountError(`failed to parse csv mounts: bare " in non-quoted-field: ${value}`);
      i = end < 0 ? value.length : end;
    }
    fields.push(field);
    if (i >= value.length) break;
    i++; // the comma
  }
  return fields;
}

function parseBool(key: string, value: string): boolean {
  const v = value.toLowerCase();
  if (['1', 't', 'true'].includes(v)) return true;
  if (['0', 'f', 'false'].includes(v)) return false;
  throw new MountError(`invalid value for ${key}: ${value}`);
}

function parseUint(key: string, value: string, radix: 8 | 10): number {
  const re = radix === 8 ? /^[0-7]+$/ : /^\d+$/;
  const n = re.test(value) ? parseInt(value, radix) : NaN;
  if (!Number.isFinite(n) || n > 0xffffffff) throw new MountError(`invalid value ${value} for ${key}`);
  return n;
}

/** docker/go-units RAMInBytes: "64m", "1g", "512", "1.5kb" (binary units). */
export function parseRamBytes(value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?$/i.exec(value.trim());
  if (!m) throw new MountError(`invalid size: '${value}'`);
  const exp = ' kmgtp'.indexOf((m[2] || ' ').toLowerCase());
  return Math.floor(Number(m[1]) * 1024 ** exp);
}

/**
 * Parses one --mount value; `expand` expands each value (`$VAR`).
 * Throws MountError with BuildKit's messages (plus "did you mean" hints).
 */
export function parseRunMount(value: string, expand: (word: string) => string): RunMount {
  const m: RunMount = { type: 'bind', from: '', source: '', target: '', readOnly: false, id: '', required: false, sizeLimit: 0 };
  let roAuto = true;
  for (const field of splitCsv(value)) {
    const eq = field.indexOf('=');
    const key = (eq < 0 ? field : field.slice(0, eq)).toLowerCase();
    if (eq < 0) {
      switch (key) {
        case 'readonly':
        case 'ro':
          m.readOnly = true;
          roAuto = false;
          continue;
        case 'readwrite':
        case 'rw':
          m.readOnly = false;
          roAuto = false;
          continue;
        case 'required':
          if (m.type !== 'secret' && m.type !== 'ssh') throw new MountError(`unexpected key '${key}' for mount type '${m.type}'`);
          m.required = true;
          continue;
        default:
          throw new MountError(`invalid field '${field}' must be a key=value pair`);
      }
    }
    const raw = field.slice(eq + 1);
    if (key === 'from') checkStaticFrom(raw);
    const v = expand(raw);
    switch (key) {
      case 'type': {
        const t = v.toLowerCase() as MountType;
        if (!MOUNT_TYPES.includes(t)) throw new MountError(`unsupported mount type "${v}"${suggestWord(v, MOUNT_TYPES)}`);
        m.type = t;
        break;
      }
      case 'from':
        m.from = v;
        break;
      case 'source':
      case 'src':
        m.source = v;
        break;
      case 'target':
      case 'dst':
      case 'destination':
        m.target = v;
        break;
      case 'readonly':
      case 'ro':
        m.readOnly = parseBool(key, v);
        roAuto = false;
        break;
      case 'readwrite':
      case 'rw':
        m.readOnly = !parseBool(key, v);
        roAuto = false;
        break;
      case 'required':
        if (m.type !== 'secret' && m.type !== 'ssh') throw new MountError(`unexpected key '${key}' for mount type '${m.type}'`);
        m.required = parseBool(key, v);
        break;
      case 'size':
        if (m.type !== 'tmpfs') throw new MountError(`unexpected key '${key}' for mount type '${m.type}'`);
        try {
          m.sizeLimit = parseRamBytes(v);
        } catch {
          throw new MountError(`invalid value for ${key}: ${v}`);
        }
        break;
      case 'id':
        m.id = v;
        break;
      case 'sharing': {
        const s = v.toLowerCase() as ShareMode;
        if (!SHARE_MODES.includes(s)) throw new MountError(`unsupported sharing value "${v}"${suggestWord(v, SHARE_MODES)}`);
        m.sharing = s;
        break;
      }
      case 'mode':
        m.mode = parseUint('mode', v, 8);
        break;
      case 'uid':
        m.uid = parseUint('uid', v, 10);
        break;
      case 'gid':
        m.gid = parseUint('gid', v, 10);
        break;
      case 'env':
        m.env = v;
        break;
      default:
        throw new MountError(`unexpected key '${key}' in '${field}'${suggestWord(key, ALL_KEYS)}`);
    }
  }
  validate(m, roAuto);
  return m;
}

/** As BuildKit: the stage a mount reads must be known before any expansion (an alias stage is the way). */
function checkStaticFrom(raw: string): void {
  const at = raw.indexOf('$');
  if (at >= 0 && at !== raw.length - 1) throw new MountError("'from' doesn't support variable expansion, define alias stage instead");
}

/**
 * The checks BuildKit makes when it parses the instruction, before any
 * stage is converted: the CSV is well formed and `from=` is not a variable.
 */
export function checkRunMountSyntax(value: string): void {
  for (const field of splitCsv(value)) {
    const eq = field.indexOf('=');
    if (eq > 0 && field.slice(0, eq).toLowerCase() === 'from') checkStaticFrom(field.slice(eq + 1));
  }
}

function validate(m: RunMount, roAuto: boolean): void {
  const fileInfoAllowed = m.type === 'secret' || m.type === 'ssh' || m.type === 'cache';
  if (!fileInfoAllowed) {
    for (const k of ['mode', 'uid', 'gid'] as const) if (m[k] !== undefined) throw new MountError(`${k} not allowed for "${m.type}" type mounts`);
  }
  if (roAuto) m.readOnly = !(m.type === 'cache' || m.type === 'tmpfs');
  if (m.env !== undefined && m.type !== 'secret') throw new MountError(`unexpected key 'env' for mount type '${m.type}'`);
  if (m.type === 'secret') {
    if (m.from !== '') throw new MountError('secret mount should not have a from');
    if (m.sharing) throw new MountError('secret mount should not define sharing');
    if (m.source === '' && m.target === '' && m.id === '') throw new MountError('invalid secret mount. one of source, target required');
    if (m.source !== '' && m.id !== '') throw new MountError("both source and id can't be set");
  }
  if (m.sharing && m.type !== 'cache') throw new MountError(`invalid cache sharing set for ${m.type} mount`);
  if (m.type === 'ssh' && m.source !== '') throw new MountError('ssh does not support source');
  if ((m.type === 'bind' || m.type === 'cache' || m.type === 'tmpfs') && m.target === '') throw new MountError(`mount type ${m.type} requires a target`);
}
