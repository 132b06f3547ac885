import { createReadStream, readFileSync, statSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { KilnError, UnavailableError } from '@kiln/common';

/** Where the Docker Engine API answers: DOCKER_HOST (unix:// or tcp://), else /var/run/docker.sock. */
export interface DockerEndpoint {
  /** Shown in errors. */
  display: string;
  options: RequestOptions;
  https: boolean;
}

/**
 * The Docker Engine endpoint for the CLI's environment, as the docker CLI
 * picks it: `DOCKER_HOST` (`unix:///PATH`, `tcp://HOST:PORT`; TLS with the
 * client certificates in `DOCKER_CERT_PATH` when `DOCKER_TLS_VERIFY` is set),
 * else the unix socket /var/run/docker.sock.
 */
export function dockerEndpoint(env: Readonly<Record<string, string | undefined>>): DockerEndpoint {
  const host = env.DOCKER_HOST || 'unix:///var/run/docker.sock';
  if (host.startsWith('unix://')) return { display: host, options: { socketPath: host.slice('unix://'.length) }, https: false };
  const m = /^(?:tcp|https?):\/\/([^/:]+|\[[^\]]+\]):(\d+)\/?$/.exec(host);
  if (!m) throw new KilnError('invalid_argument', `invalid DOCKER_HOST "${host}": want unix:///PATH or tcp://HOST:PORT`, { field: 'DOCKER_HOST' });
  const tls = !!env.DOCKER_TLS_VERIFY || host.startsWith('https://');
  const options: RequestOptions = { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) };
  if (tls) {
    const dir = env.DOCKER_CERT_PATH || join(env.HOME ?? '', '.docker');
    Object.assign(options, { ca: readFileSync(join(dir, 'ca.pem')), cert: readFileSync(join(dir, 'cert.pem')), key: readFileSync(join(dir, 'key.pem')) });
  }
  return { display: host, options, https: tls };
}

/**
 * Loads a docker-format image tarball into the Docker Engine
 * (`POST /images/load`, the call behind `docker load`). Returns the names
 * the engine reports ("Loaded image: NAME"); an engine error or an
 * unreachable engine is a KilnError naming the endpoint.
 */
export async function loadIntoDocker(tarPath: string, env: Readonly<Record<string, string | undefined>>, signal?: AbortSignal): Promise<string[]> {
  const ep = dockerEndpoint(env);
  const size = statSync(tarPath).size;
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = (ep.https ? httpsRequest : httpRequest)({
      ...ep.options,
      method: 'POST',
      path: '/images/load?quiet=1',
      headers: { 'content-type': 'application/x-tar', 'content-length': String(size) },
      signal,
    });
    req.once('response', resolve);
    req.once('error', (err) => reject(new UnavailableError(`failed to load the image into docker at ${ep.display}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, {}, { cause: err })));
    createReadStream(tarPath).once('error', reject).pipe(req);
  });
  let body = '';
  for await (const c of res) body += (c as Buffer).toString('utf8');
  if ((res.statusCode ?? 0) >= 300) {
    let msg = body.trim();
    try {
      msg = (JSON.parse(body) as { message?: string }).message ?? msg;
    } catch {
      // plain text
    }
    throw new KilnError('unavailable', `failed to load the image into docker at ${ep.display}: HTTP ${res.statusCode}: ${msg}`);
  }
  const names: string[] = [];
  // A JSON message stream: {"stream":"Loaded image: x\n"} ... or {"error": "..."}.
  for (const line of body.split('\n')) {
    if (line.trim() === '') continue;
    let m: { stream?: string; error?: string; errorDetail?: { message?: string } };
    try {
      m = JSON.parse(line) as typeof m;
    } catch {
      continue;
    }
    if (m.error || m.errorDetail) throw new KilnError('unavailable', `failed to load the image into docker at ${ep.display}: ${m.error ?? m.errorDetail?.message}`);
    const loaded = /^Loaded image(?: ID)?: (.+)$/m.exec(m.stream ?? '');
    if (loaded) names.push(loaded[1]!.trim());
  }
  return names;
}
