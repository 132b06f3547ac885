import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileDaemonOptions } from '@kiln/kilnd';

// deploy/kubernetes, checked offline: rendered as `kubectl kustomize` does
// for the keys it uses, every object type-checked against the Kubernetes API
// types (npm kubernetes-types: unknown fields, wrong types and missing
// required fields fail), then the wiring: selectors, mounts, Secrets from
// make-secrets.sh, and each kilnd container's flags compiled by kilnd itself
// against the files its pod would mount.
const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const k8sDir = join(repo, 'deploy', 'kubernetes');

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; [k: string]: any };
interface Rendered {
  file: string;
  obj: Obj;
}

/** The subset of kustomize this folder uses: namespace, resources, images. */
function render(dir: string): Rendered[] {
  const k = parseYaml(readFileSync(join(dir, 'kustomization.yaml'), 'utf8'), { version: '1.1' });
  const unknown = Object.keys(k).filter((key) => !['apiVersion', 'kind', 'namespace', 'resources', 'images'].includes(key));
  if (unknown.length) throw new Error(`kustomization.yaml: keys ${unknown.join(', ')} are not understood by this check`);
  const out: Rendered[] = [];
  for (const file of k.resources as string[]) {
    // YAML 1.1 as kubectl reads it: 0400 is octal.
    for (const doc of parseAllDocuments(readFileSync(join(dir, file), 'utf8'), { version: '1.1' })) {
      if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0]!.message}`);
      const obj = doc.toJS() as Obj | null;
      if (!obj) continue;
      if (k.namespace && obj.kind !== 'Namespace') obj.metadata.namespace = k.namespace;
      for (const c of containersOf(obj)) {
        for (const img of k.images ?? []) {
          if (c.image === img.name || c.image.startsWith(`${img.name}:`)) c.image = `${img.newName ?? img.name}${img.newTag ? `:${img.newTag}` : ''}`;
        }
      }
      out.push({ file, obj });
    }
  }
  return out;
}

const podSpecOf = (o: Obj): any => (['Deployment', 'StatefulSet', 'DaemonSet'].includes(o.kind) ? o.spec?.template?.spec : undefined);
const containersOf = (o: Obj): any[] => [...(podSpecOf(o)?.containers ?? []), ...(podSpecOf(o)?.initContainers ?? [])];

const TYPES: Record<string, string> = {
  'v1/Namespace': 'core/v1',
  'v1/ConfigMap': 'core/v1',
  'v1/Secret': 'core/v1',
  'v1/Service': 'core/v1',
  'v1/PersistentVolumeClaim': 'core/v1',
  'apps/v1/Deployment': 'apps/v1',
  'apps/v1/StatefulSet': 'apps/v1',
  'apps/v1/DaemonSet': 'apps/v1',
};

/** Type-checks each object as a literal of its Kubernetes API type; returns one line per problem. */
function typeCheck(objs: Rendered[]): string[] {
  const problems: string[] = [];
  const lines: string[] = [];
  const owner: string[] = []; // line -> object
  const imports = new Map<string, Set<string>>();
  objs.forEach(({ file, obj }, i) => {
    const mod = TYPES[`${obj.apiVersion}/${obj.kind}`];
    const label = `${file}: ${obj.kind}/${obj.metadata?.name}`;
    if (!mod) {
      problems.push(`${label}: no Kubernetes type for apiVersion ${obj.apiVersion} kind ${obj.kind}`);
      return;
    }
    if (!imports.has(mod)) imports.set(mod, new Set());
    imports.get(mod)!.add(obj.kind);
    const text = `export const o${i}: ${obj.kind} = ${JSON.stringify(obj, null, 2)};`.split('\n');
    for (const l of text) {
      lines.push(l);
      owner.push(label);
    }
  });
  const header = [...imports].map(([mod, kinds]) => `import type { ${[...kinds].join(', ')} } from 'kubernetes-types/${mod}';`);
  const source = [...header, ...lines].join('\n');
  const fileName = join(k8sDir, '__rendered__.ts');
  const options: ts.CompilerOptions = { strict: true, noEmit: true, skipLibCheck: true, types: [], module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler, target: ts.ScriptTarget.ES2022, lib: ['lib.es5.d.ts'] };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) => (name === fileName ? ts.createSourceFile(name, source, lang) : getSourceFile(name, lang, ...rest));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === fileName || fileExists(name);
  const program = ts.createProgram([fileName], options, host);
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const msg = ts.flattenDiagnosticMessageText(d.messageText, '\n').split('\n').pop()!;
    if (!d.file || d.file.fileName !== fileName) {
      problems.push(msg);
      continue;
    }
    const { line } = d.file.getLineAndCharacterOfPosition(d.start ?? 0);
    const where = owner[line - header.length] ?? 'header';
    problems.push(`${where}: at ${lines[line - header.length]?.trim()} ${msg}`);
  }
  return problems;
}

let tmp: string;
let objs: Rendered[];
let secrets: Obj[];

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kiln-k8s-'));
  objs = render(k8sDir);
  const made = spawnSync('sh', [join(k8sDir, 'make-secrets.sh'), join(tmp, 'secrets'), 'kiln'], { encoding: 'utf8' });
  expect(made.status, made.stderr).toBe(0);
  secrets = parseAllDocuments(made.stdout).map((d) => d.toJS() as Obj).filter(Boolean);
});
afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const byKind = (kind: string) => objs.filter((r) => r.obj.kind === kind).map((r) => r.obj);
const named = (kind: string, name: string) => byKind(kind).find((o) => o.metadata.name === name);

describe('deploy/kubernetes', () => {
  it('renders to the topology: NATS and content as StatefulSets, solver, frontend and exporters as Deployments, workers as DaemonSets', () => {
    const names = (kind: string) => byKind(kind).map((o) => o.metadata.name).sort();
    expect(names('StatefulSet')).toEqual(['content', 'nats']);
    expect(names('Deployment')).toEqual(['exporters', 'frontend', 'solver']);
    expect(names('DaemonSet')).toEqual(['worker-containerd', 'worker-oci']);
    for (const { obj } of objs) if (obj.kind !== 'Namespace') expect(obj.metadata.namespace, `${obj.kind}/${obj.metadata.name}`).toBe('kiln');
    for (const o of [...byKind('Deployment'), ...byKind('StatefulSet'), ...byKind('DaemonSet')]) {
      for (const c of containersOf(o)) expect(c.image).toBe('kiln:dev');
    }
  });

  it('every object and every Secret of make-secrets.sh type-checks against the Kubernetes API types', () => {
    expect(typeCheck([...objs, ...secrets.map((obj) => ({ file: 'make-secrets.sh', obj }))])).toEqual([]);
  });

  it('the type check catches an unknown field, a wrong type and a missing required field', () => {
    const copy = join(tmp, 'broken');
    cpSync(k8sDir, copy, { recursive: true });
    const workers = readFileSync(join(copy, 'workers.yaml'), 'utf8');
    writeFileSync(join(copy, 'workers.yaml'), workers.replace('hostPath: {path: /var/lib/kiln/worker-oci', 'hostpath: {path: /var/lib/kiln/worker-oci'));
    const solver = readFileSync(join(copy, 'solver.yaml'), 'utf8');
    writeFileSync(join(copy, 'solver.yaml'), solver.replace('replicas: 1', 'replicas: "one"').replace('      port: 8750\n', ''));
    const problems = typeCheck(render(copy));
    expect(problems.join('\n')).toMatch(/workers\.yaml: DaemonSet\/worker-oci: at "hostpath": \{ .*'"hostpath"' does not exist in type 'Volume'/);
    expect(problems.join('\n')).toMatch(/solver\.yaml: Deployment\/solver: at "replicas": "one", Type 'string' is not assignable to type 'number'/);
    expect(problems.join('\n')).toMatch(/solver\.yaml: Service\/solver: .*Property 'port' is missing/);
  });

  it('selectors, services, volumes, ConfigMaps and Secrets are wired', () => {
    const secretNames = new Set(secrets.map((s) => s.metadata.name));
    const pods = [...byKind('Deployment'), ...byKind('StatefulSet'), ...byKind('DaemonSet')];
    for (const o of pods) {
      const where = `${o.kind}/${o.metadata.name}`;
      const labels = o.spec.template.metadata.labels;
      for (const [k, v] of Object.entries(o.spec.selector.matchLabels)) expect(labels[k], `${where} selector ${k}`).toBe(v);
      const spec = podSpecOf(o);
      const volumes = new Map<string, any>((spec.volumes ?? []).map((v: any) => [v.name, v]));
      for (const t of o.spec.volumeClaimTemplates ?? []) volumes.set(t.metadata.name, { pvc: true });
      for (const c of containersOf(o)) {
        for (const m of c.volumeMounts ?? []) {
          const v = volumes.get(m.name);
          expect(v, `${where}: volumeMount ${m.name}`).toBeDefined();
          if (v.configMap) {
            const cm = named('ConfigMap', v.configMap.name);
            expect(cm, `${where}: ConfigMap ${v.configMap.name}`).toBeDefined();
            if (m.subPath) expect(Object.keys(cm!.data), `${where}: ${m.subPath}`).toContain(m.subPath);
          }
          if (v.secret) expect(secretNames, `${where}: Secret ${v.secret.secretName}`).toContain(v.secret.secretName);
          if (v.persistentVolumeClaim) expect(named('PersistentVolumeClaim', v.persistentVolumeClaim.claimName), `${where}: PVC`).toBeDefined();
        }
        // $(VAR) in args is expanded by the kubelet only from the container's env.
        const env = new Set((c.env ?? []).map((e: any) => e.name));
        for (const a of c.args ?? []) for (const m of String(a).matchAll(/\$\(([A-Z_]+)\)/g)) expect(env, `${where}: $(${m[1]})`).toContain(m[1]);
      }
      if (o.kind === 'StatefulSet') {
        const svc = named('Service', o.spec.serviceName);
        expect(svc?.spec.clusterIP, `${where}: headless Service ${o.spec.serviceName}`).toBe('None');
      }
      if (o.kind === 'DaemonSet') {
        expect(containersOf(o)[0].securityContext?.privileged, `${where} privileged`).toBe(true);
        expect(spec.volumes.find((v: any) => v.name === 'state')?.hostPath?.path).toMatch(/^\/var\/lib\/kiln\//);
      }
    }
    for (const svc of byKind('Service')) {
      const targets = pods.filter((o) => Object.entries(svc.spec.selector).every(([k, v]) => o.spec.template.metadata.labels[k] === v));
      expect(targets.length, `Service/${svc.metadata.name} selects a pod template`).toBe(1);
      const ports = containersOf(targets[0]!).flatMap((c) => c.ports ?? []).map((p: any) => p.name);
      for (const p of svc.spec.ports) expect(ports, `Service/${svc.metadata.name} targetPort`).toContain(p.targetPort);
    }
    expect(named('StatefulSet', 'nats')!.spec.template.spec.containers[0].args).toContain('--jetstream');
    // One kilnd.toml for compose and Kubernetes (comments aside).
    const strip = (t: string) => t.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')).join('\n');
    expect(strip(named('ConfigMap', 'kilnd-config')!.data['kilnd.toml'])).toBe(strip(readFileSync(join(repo, 'deploy', 'compose', 'kilnd.toml'), 'utf8')));
  });

  it("kilnd accepts each tier's flags with the files its pod mounts (config, certificates, NATS login)", () => {
    const tiers: Record<string, { user: string; tls: string }> = {};
    for (const o of [...byKind('Deployment'), ...byKind('StatefulSet'), ...byKind('DaemonSet')]) {
      if (o.metadata.name === 'nats') continue;
      const root = join(tmp, 'pods', o.metadata.name);
      const spec = podSpecOf(o);
      const c = containersOf(o)[0];
      // Lay out what the kubelet would mount, under `root`.
      for (const m of c.volumeMounts) {
        const v = spec.volumes?.find((x: any) => x.name === m.name);
        if (v?.configMap) {
          const text: string = named('ConfigMap', v.configMap.name)!.data[m.subPath].replaceAll('"/etc/kiln/', `"${root}/etc/kiln/`).replaceAll('"/var/lib/kiln', `"${root}/var/lib/kiln`);
          mkdirSync(dirname(join(root, m.mountPath)), { recursive: true });
          writeFileSync(join(root, m.mountPath), text);
        } else if (v?.secret) {
          const s = secrets.find((x) => x.metadata.name === v.secret.secretName)!;
          mkdirSync(join(root, m.mountPath), { recursive: true });
          for (const [k, b64] of Object.entries(s.data)) writeFileSync(join(root, m.mountPath, k), Buffer.from(String(b64), 'base64'));
        }
      }
      const args = (c.args as string[]).map((a) => a.replaceAll('$(POD_IP)', '10.1.2.3').replaceAll('$(NODE_NAME)', 'node-1').replace(/^\/etc\/kiln\//, `${root}/etc/kiln/`));
      const opts = compileDaemonOptions(args, {});
      expect(opts.tier).toBe(c.name);
      expect(opts.root).toBe(`${root}/var/lib/kiln`);
      expect(opts.tls?.cert).toBe(`${root}/etc/kiln/tls/tier.pem`);
      expect(opts.natsTls?.ca).toContain('BEGIN CERTIFICATE');
      expect(opts.advertise).toMatch(/^tcp:\/\/10\.1\.2\.3:87\d\d$/);
      expect(opts.listen).toMatchObject({ kind: 'tcp', host: '0.0.0.0' });
      expect(opts.nats).toBe('nats://nats:4222');
      const auth = opts.natsAuth as { user: string; password: string };
      tiers[c.name] = { user: auth.user, tls: spec.volumes.find((v: any) => v.name === 'tls').secret.secretName };
      // The password in the pod is the one the NATS server has for that user.
      const server = secrets.find((x) => x.metadata.name === 'kiln-nats-server')!;
      expect(auth.password).toBe(Buffer.from(server.data[`${auth.user}.password`], 'base64').toString('utf8').trim());
    }
    expect(tiers).toEqual({
      solver: { user: 'solver', tls: 'kiln-tls-solver' },
      frontend: { user: 'frontend', tls: 'kiln-tls-frontend' },
      exporters: { user: 'exporters', tls: 'kiln-tls-exporters' },
      content: { user: 'content', tls: 'kiln-tls-content' },
      'worker-oci': { user: 'worker', tls: 'kiln-tls-worker' },
      'worker-containerd': { user: 'worker', tls: 'kiln-tls-worker' },
    });
  });
});
