#!/usr/bin/env node
// Dockerfile frontend benchmark (run after `bash tools/setup.sh`, which builds
// dist): parse + convert (+ marshal to a definition) of a generated
// 2,000-instruction, 20-stage Dockerfile. Prints a Markdown table and writes
// it to bench-results/dockerfile.md. Median of RUNS runs after a warm-up.
// BuildKit is not measured: Debian's docker.io has no `docker build --check`.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { convertDockerfile, parseDockerfile, parseInstructions } from '@kiln/dockerfile';
import { marshal } from '@kiln/llb';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const RUNS = Number(process.env.BENCH_RUNS ?? 15);
const STAGES = 20;
const PER_STAGE = 100; // the FROM plus 99 instructions

function generate() {
  const lines = ['# syntax=docker/dockerfile:1', 'ARG BASE=alpine:3.19'];
  for (let s = 0; s < STAGES; s++) {
    // Every stage starts from the base image (every 5th from the stage before) and
    // copies from the previous one, so the target needs all 20 stages.
    lines.push(s === 0 ? 'FROM --platform=$BUILDPLATFORM ${BASE} AS stage0' : s % 5 === 0 ? `FROM stage${s - 1} AS stage${s}` : `FROM \${BASE} AS stage${s}`);
    for (let i = 1; i < PER_STAGE; i++) {
      const k = `${s}_${i}`;
      switch (i % 11) {
        case 0: lines.push(`ARG A${k}=v${k}`); break;
        case 1: lines.push(`ENV E${k}="value ${k}" P${k}=\${A${s}_${i - 1}:-d}`); break;
        case 2: lines.push(`RUN --mount=type=cache,target=/cache/${k},sharing=locked --mount=type=bind,source=src/${k},target=/src echo ${k} > /out${k}`); break;
        case 3: lines.push(`COPY --chown=1000:1000 --chmod=0644 files/${k}.txt /files/`); break;
        case 4: lines.push(`WORKDIR /work/${k}`); break;
        case 5: lines.push(`LABEL l${k}="${k}" other${k}=x`); break;
        case 6: lines.push(s > 0 ? `COPY --from=stage${s - 1} /out${s - 1}_2 /from/${k}` : `COPY a${k} /a/`); break;
        case 7: lines.push(`RUN <<EOF\necho heredoc ${k}\ntouch /h${k}\nEOF`); break;
        case 8: lines.push(`ADD https://example.com/f${k}.tar.gz /dl/`); break;
        case 9: lines.push(`EXPOSE ${8000 + i}/tcp`); break;
        default: lines.push(`RUN --mount=type=secret,id=s${k} --network=none ["/bin/sh", "-c", "echo ${k}"]`);
      }
    }
  }
  return `${lines.join('\n')}\n`;
}

const text = generate();
const instructions = parseDockerfile(text).children.length;
const opts = { platform: { os: 'linux', architecture: 'amd64' }, buildPlatform: { os: 'linux', architecture: 'amd64' } };

async function once() {
  const t0 = performance.now();
  const ast = parseDockerfile(text);
  parseInstructions(ast);
  const t1 = performance.now();
  const res = await convertDockerfile(text, opts);
  const t2 = performance.now();
  const def = marshal(res.state);
  const t3 = performance.now();
  return { parse: t1 - t0, convert: t2 - t1, marshal: t3 - t2, total: t3 - t0, ops: def.def.length };
}

for (let i = 0; i < 3; i++) await once(); // warm-up (JIT)
const samples = [];
for (let i = 0; i < RUNS; i++) samples.push(await once());
const median = (k) => {
  const v = samples.map((s) => s[k]).sort((a, b) => a - b);
  return v[Math.floor(v.length / 2)];
};
const ms = (x) => x.toFixed(1);

const table = [
  `Dockerfile frontend: ${instructions} instructions, ${STAGES} stages, ${text.length} bytes; median of ${RUNS} runs (Node ${process.version}, ${cpus().length} CPUs, load average ${loadavg()[0].toFixed(1)} when it ended).`,
  'Convert includes parsing again (it starts from the text); total = parse + convert + marshal. Target: parse + convert < 50 ms.',
  'BuildKit: not measured (Debian\'s docker.io has no `docker build --check`).',
  '',
  '| step | ms |',
  '| --- | ---: |',
  `| parse (AST + instructions) | ${ms(median('parse'))} |`,
  `| convert to LLB (incl. parse) | ${ms(median('convert'))} |`,
  `| marshal definition (${samples[0].ops} ops) | ${ms(median('marshal'))} |`,
  `| total | ${ms(median('total'))} |`,
  '',
].join('\n');
console.log(table);
mkdirSync(join(repo, 'bench-results'), { recursive: true });
writeFileSync(join(repo, 'bench-results', 'dockerfile.md'), `# Dockerfile frontend benchmark\n\n${table}`);
