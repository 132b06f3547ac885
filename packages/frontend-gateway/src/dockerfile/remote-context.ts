import { InvalidArgumentError } from '@kiln/common';
import { parseGitUrl } from '@kiln/dockerfile';
import { FileChain, git, http, marshal, State } from '@kiln/llb';
import type { FrontendGateway } from '../frontend.js';
import { scanSshHostKeys } from './ssh-keyscan.js';

/** BuildKit's name of the downloaded file of an http(s) context. */
const HTTP_CONTEXT_FILE = 'context';
/** How much of the download is read to tell an archive from a Dockerfile (as BuildKit). */
const SNIFF_BYTES = 1024;

/** A build context the workers fetch (a git repository or an http(s) download) instead of the client's directory. */
export interface RemoteContext {
  /** The main context: the checkout, the unpacked archive, or the lone downloaded file. */
  state: State;
  /** The Dockerfile's name inside it when the download is the Dockerfile itself ("context"); else the frontend's `filename`. */
  filename?: string;
  /** Reads a file of the context (the Dockerfile, its ignore file); undefined when absent. */
  readFile(path: string, maxBytes?: number): Promise<Uint8Array | undefined>;
}

/**
 * BuildKit's remote main context (the frontend attr `context`, which buildx
 * sets to the URL given as the build context): a git URL
 * (`https://HOST/REPO.git#REF:SUBDIR`, `git@HOST:REPO`, `git://`, `ssh://`)
 * is checked out (`.git` only with the build arg
 * BUILDKIT_CONTEXT_KEEP_GIT_DIR=1); any other `http(s)://` URL is downloaded
 * and, when its first bytes are a tar archive (plain, gzip, bzip2 or xz),
 * unpacked as the context, else taken as the Dockerfile itself (file
 * `context`). The fetch runs on a worker as a step of the build, solved
 * through the gateway; undefined when `value` is not a URL.
 */
export async function loadRemoteContext(value: string | undefined, attrs: Record<string, string>, gateway: FrontendGateway | undefined, signal?: AbortSignal): Promise<RemoteContext | undefined> {
  if (!value) return undefined;
  const gitUrl = parseGitUrl(value);
  const isHttp = /^https?:\/\//i.test(value);
  if (!gitUrl && !isHttp) return undefined;
  if (!gateway) throw new InvalidArgumentError(`remote build context "${value}" needs a frontend that can solve through the gateway`, 'context');
  const solved = async (state: State) => {
    const id = await gateway.solve(marshal(state), signal);
    return (path: string, maxBytes = 0) => gateway.readFile(id, path, maxBytes, signal);
  };
  if (gitUrl) {
    const keep = attrs['build-arg:BUILDKIT_CONTEXT_KEEP_GIT_DIR'];
    const knownSshHosts = await scanSshHostKeys(gitUrl.fullUrl, signal);
    const state = git(gitUrl.remote, gitUrl.ref, {
      fullUrl: gitUrl.fullUrl,
      ...(knownSshHosts ? { knownSshHosts } : {}),
      subdir: gitUrl.subdir || undefined,
      keepGitDir: keep === '1' || keep?.toLowerCase() === 'true',
      description: `[internal] load git source ${value}`,
    });
    return { state, readFile: await solved(state) };
  }
  const download = http(value, { filename: HTTP_CONTEXT_FILE, description: '[internal] load remote build context' });
  const readDownload = await solved(download);
  const head = (await readDownload(HTTP_CONTEXT_FILE, SNIFF_BYTES)) ?? new Uint8Array();
  if (!isArchive(head)) return { state: download, filename: HTTP_CONTEXT_FILE, readFile: readDownload };
  const unpacked = FileChain.start()
    .copy(download, `/${HTTP_CONTEXT_FILE}`, '/', { attemptUnpackDockerCompatibility: true, createDestPath: true })
    .apply(State.scratch(), { description: '[internal] unpack remote build context' });
  return { state: unpacked, readFile: await solved(unpacked) };
}

/** A compressed stream (gzip, bzip2, xz) or a tar header whose checksum holds, as BuildKit's isArchive. */
export function isArchive(head: Uint8Array): boolean {
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  if (b.length >= 3 && b[0] === 0x1f && b[1] === 0x8b && b[2] === 0x08) return true;
  if (b.subarray(0, 3).toString('latin1') === 'BZh') return true;
  if (b.length >= 6 && b.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return true;
  if (b.length < 512) return false;
  const field = b.subarray(148, 156).toString('latin1').replace(/\0.*$/s, '').trim();
  if (!/^[0-7]+$/.test(field)) return false;
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : b[i]!;
  return sum === parseInt(field, 8);
}
