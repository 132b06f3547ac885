#!/usr/bin/env node
// Registry pull benchmark: a ~200 MiB image (8 random, uncompressed 25 MiB
// layers) pushed to a local registry (Debian's docker-registry, started with
// the testkit launcher), then pulled by Kiln's registry client (blobs to a
// temp dir, digests verified while streaming, 6 blobs at a time) next to
// `skopeo copy docker://... dir:DIR` of the same image (skopeo also verifies
// digests and copies 6 layers at a time). Median of RUNS runs each, fresh
// dirs, alternating. Prints a Markdown table and writes
// bench-results/registry.md. Needs `npm run build` first (imports dist/).
// Env: KILN_BENCH_RUNS (default 3), KILN_BENCH_LAYERS (8), KILN_BENCH_LAYER_MIB (25).
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { createRegistryClient, parseReference, resolveImage, parsePlatform, MediaType } = await import(join(root, 'packages/registry/dist/index.js'));
const { startRegistry, makeTar } = await import(join(root, 'packages/testkit/dist/index.js'));

const RUNS = Number(process.env.KILN_BENCH_RUNS ?? 3);
const LAYERS = Number(process.env.KILN_BENCH_LAYERS ?? 8);
const LAYER_MIB = Number(process.env.KILN_BENCH_LAYER_MIB ?? 25);
const CONCURRENCY = 6;
const SKOPEO = '/usr/bin/skopeo';

const sha256 = (b) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmtS = (ms) => `${(ms / 1000).toFixed(3)} s`;
const fmtRate = (bytes, ms) => `${(bytes / 2 ** 20 / (ms / 1000)).toFixed(0)} MiB/s`;

/** Runs `fn` over `items` with at most `n` in flight. */
async function pool(items, n, fn) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]);
    }),
  );
}

function buildImage() {
  const layers = [];
  for (let i = 0; i < LAYERS; i++) {
    const tar = makeTar({ [`data/layer-${i}.bin`]: randomBytes(LAYER_MIB * 2 ** 20) });
    layers.push({ descriptor: { mediaType: MediaType.OciLayer, digest: sha256(tar), size: tar.length }, data: tar, diffId: sha256(tar) });
  }
  const config = Buffer.from(
    JSON.stringify({
      created: '2024-01-01T00:00:00Z',
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    }),
  );
  const configDesc = { mediaType: MediaType.OciConfig, digest: sha256(config), size: config.length };
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers: layers.map((l) => l.descriptor) }));
  return { layers, config: { descriptor: configDesc, data: config }, manifest: { descriptor: { mediaType: MediaType.OciManifest, digest: sha256(manifest), size: manifest.length }, data: manifest } };
}

async function kilnPull(client, ref, dir) {
  const { manifest } = await resolveImage(client, ref, parsePlatform('linux/amd64'));
  const blobs = [manifest.manifest.config, ...manifest.manifest.layers];
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'manifest.json'), manifest.bytes);
  let bytes = manifest.bytes.length;
  await pool(blobs, CONCURRENCY, async (desc) => {
    const final = join(dir, 'blobs', 'sha256', desc.digest.slice(7));
    const tmp = `${final}.partial`;
    // The client verifies size and digest before releasing the last chunk; rename only after.
    await pipeline(client.fetch(ref, desc), createWriteStream(tmp));
    await rename(tmp, final);
    bytes += desc.size;
  });
  return bytes;
}

function skopeoPull(host, dir) {
  const r = spawnSync(SKOPEO, ['copy', '-q', '--src-tls-verify=false', `docker://${host}/bench/image:v1`, `dir:${dir}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`skopeo copy failed: ${r.stderr}`);
}

const registry = await startRegistry();
const work = await mkdtemp(join(tmpdir(), 'kiln-bench-registry-'));
try {
  process.stderr.write(`building a ${LAYERS} x ${LAYER_MIB} MiB image...\n`);
  const image = buildImage();
  const total = image.layers.reduce((n, l) => n + l.data.length, 0) + image.config.data.length + image.manifest.data.length;
  const client = createRegistryClient();
  const ref = parseReference(`${registry.host}/bench/image:v1`);

  const pushStart = performance.now();
  await pool([...image.layers, image.config], CONCURRENCY, (b) =>
    client.pushBlob(ref, b.descriptor, async function* () {
      for (let i = 0; i < b.data.length; i += 1 << 20) yield b.data.subarray(i, i + (1 << 20));
    }),
  );
  await client.pushManifest(ref, image.manifest.descriptor, image.manifest.data);
  const pushMs = performance.now() - pushStart;
  process.stderr.write(`pushed ${(total / 2 ** 20).toFixed(1)} MiB in ${fmtS(pushMs)}\n`);

  const kiln = [];
  const skopeo = [];
  for (let run = 0; run < RUNS; run++) {
    const kdir = join(work, `kiln-${run}`);
    let t = performance.now();
    const got = await kilnPull(createRegistryClient(), ref, kdir);
    kiln.push(performance.now() - t);
    if (got !== total) throw new Error(`kiln pulled ${got} bytes, want ${total}`);
    await rm(kdir, { recursive: true, force: true });

    const sdir = join(work, `skopeo-${run}`);
    await mkdir(sdir);
    t = performance.now();
    skopeoPull(registry.host, sdir);
    skopeo.push(performance.now() - t);
    await rm(sdir, { recursive: true, force: true });
    process.stderr.write(`run ${run + 1}: kiln ${fmtS(kiln.at(-1))}, skopeo ${fmtS(skopeo.at(-1))}\n`);
  }
  const k = median(kiln);
  const s = median(skopeo);
  const mib = (total / 2 ** 20).toFixed(1);
  const table = [
    `Registry pull, ${mib} MiB image (${LAYERS} uncompressed random layers of ${LAYER_MIB} MiB + config + manifest) from a local docker-registry over HTTP on 127.0.0.1, ${RUNS} runs (median), ${new Date().toISOString()}`,
    '',
    `Both write every blob to a temp dir and verify digests, ${CONCURRENCY} blobs at a time. Kiln: \`resolveImage\` + \`fetch\` per blob (packages/registry); skopeo: \`skopeo copy docker://... dir:DIR\`. (Kiln push of the same image, for reference: ${fmtS(pushMs)}.)`,
    '',
    '| pull | wall time (median) | throughput | runs |',
    '| --- | ---: | ---: | --- |',
    `| Kiln registry client | ${fmtS(k)} | ${fmtRate(total, k)} | ${kiln.map(fmtS).join(', ')} |`,
    `| skopeo copy | ${fmtS(s)} | ${fmtRate(total, s)} | ${skopeo.map(fmtS).join(', ')} |`,
    `| **Kiln / skopeo** | **${(k / s).toFixed(2)}** |  |  |`,
    '',
  ].join('\n');
  console.log(table);
  await mkdir(join(root, 'bench-results'), { recursive: true });
  await writeFile(join(root, 'bench-results', 'registry.md'), table);
} finally {
  await rm(work, { recursive: true, force: true });
  await registry.stop();
}
