import { create, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import { events } from '@kiln/api';
import { buildEventSubject, connectNatsBus, createServiceDirectory, workerProgressSubject, type EventBus, type NatsAuth } from '@kiln/bus';
import { runKiln, startKilnCluster, startKilnNats, type KilnCluster, type KilnNats, type KilnNatsUser, type RunResult } from '@kiln/testkit';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// Security issue 12, hole 3: NATS was open. A process on it joined as a
// rogue worker (id 0000-rogue wins the tie-break) and received every build;
// another wrote log lines and a done event into a victim's build.
describe('NATS refuses strangers, forged build events and rogue workers [topology=split, worker=oci]', () => {
  let nats: KilnNats;
  let cluster: KilnCluster;
  let ctx: string;
  const rogues: EventBus[] = [];
  const hostArch = process.arch === 'x64' ? 'amd64' : process.arch;

  beforeAll(async () => {
    nats = await startKilnNats();
    cluster = await startKilnCluster(nats, ['solver', 'frontend', 'exporters', 'worker-oci', 'content']).catch(async (err: unknown) => {
      await nats.stop();
      throw err;
    });
    ctx = mkdtempSync(join(tmpdir(), 'kiln-nats-sec-'));
    copyFileSync('/bin/busybox', join(ctx, 'busybox'));
    // The victim's step runs long enough for the attacker to find and target the build.
    writeFileSync(
      join(ctx, 'Dockerfile'),
      'FROM scratch\nCOPY --chmod=0755 busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\nRUN echo victim-start && sleep 4 && echo victim-end\n',
    );
  }, 90_000);

  afterAll(async () => {
    await Promise.all(rogues.map((b) => b.close()));
    await cluster?.stop();
    await nats?.stop();
    if (ctx) rmSync(ctx, { recursive: true, force: true });
  });

  const tls = (withClientCert = true) => ({
    ca: readFileSync(nats.certs.ca, 'utf8'),
    ...(withClientCert ? { cert: readFileSync(nats.certs.clientCert, 'utf8'), key: readFileSync(nats.certs.clientKey, 'utf8') } : {}),
  });
  const connect = async (auth: NatsAuth | undefined, withClientCert = true) => {
    const bus = await connectNatsBus({ servers: nats.url, name: 'rogue', connectTimeoutMs: 3000, tls: tls(withClientCert), ...(auth ? { auth } : {}) });
    rogues.push(bus);
    return bus;
  };
  const connectAs = (user: KilnNatsUser) => connect({ user, password: nats.password(user) });
  const kiln = (...args: string[]): Promise<RunResult> => runKiln([args[0]!, ...(args[0] === 'history' ? [args[1]!, '--addr', cluster.addr, ...args.slice(2)] : ['--addr', cluster.addr, ...args.slice(1)])], { env: cluster.env });
  const publishBuildEvent = (bus: EventBus, subject: string, ev: MessageInitShape<typeof events.BuildEventSchema>) =>
    bus.publish(subject, toBinary(events.BuildEventSchema, create(events.BuildEventSchema, ev)));

  it('refuses a client without credentials, with a wrong password or without a client certificate', async () => {
    await expect(connect(undefined)).rejects.toMatchObject({ code: 'unavailable', message: expect.stringMatching(/Authorization Violation/i) });
    const wrong = await connect({ user: 'worker', password: 'guessed-password' }).catch((e: Error) => e);
    expect(wrong).toMatchObject({ code: 'unavailable', message: expect.stringMatching(/Authorization Violation/i) });
    expect((wrong as Error).message).not.toContain('guessed-password');
    await expect(connect({ user: 'worker', password: nats.password('worker') }, false)).rejects.toMatchObject({ code: 'unavailable' });
    await expect(connectNatsBus({ servers: nats.url, connectTimeoutMs: 3000 })).rejects.toMatchObject({ code: 'unavailable' });
  });

  it("keeps forged log lines and a forged done out of a victim's output and history, even from the worker user", async () => {
    const victim = kiln('build', '--progress=plain', ctx);
    // The attacker learns the build id (the test reads it from the history; NATS no longer lets it read kiln.build.>).
    let ref = '';
    for (const deadline = Date.now() + 30_000; !ref && Date.now() < deadline; await new Promise((r) => setTimeout(r, 200))) {
      const ls = await kiln('history', 'ls', '--format', 'json');
      const running = ls.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { ref: string; status: string }).find((r) => r.status === 'running');
      ref = running?.ref ?? '';
    }
    expect(ref, 'the victim build never showed as running').not.toBe('');

    const rogue = await connectAs('worker');
    const spy = rogue.subscribe('kiln.build.>');
    const spied: string[] = [];
    const spying = (async () => {
      for await (const m of spy) spied.push(m.subject);
    })();
    const forgedLine = (text: string): MessageInitShape<typeof events.BuildEventSchema> => ({
      buildId: ref,
      event: { case: 'log', value: { vertex: 'sha256:forged', stream: 1, msg: new TextEncoder().encode(`${text}\n`) } },
    });
    let attempts = 0;
    let finished = false;
    const victimDone = victim.finally(() => (finished = true));
    while (!finished) {
      attempts++;
      await publishBuildEvent(rogue, buildEventSubject(ref, 'log'), forgedLine('FORGED-LOG-ON-BUILD-SUBJECT'));
      await publishBuildEvent(rogue, buildEventSubject(ref, 'done'), { buildId: ref, event: { case: 'done', value: { error: 'FORGED-DONE' } } });
      // On the workers' own subject, under an id the solver did not choose for this build.
      await publishBuildEvent(rogue, workerProgressSubject('0000-rogue', ref, 'log'), forgedLine('FORGED-LOG-ON-PROGRESS-SUBJECT'));
      await new Promise((r) => setTimeout(r, 150));
    }
    const res = await victimDone;
    expect(attempts).toBeGreaterThan(3);
    const onFailure = `exit ${res.code}\n${res.stderr}\n${cluster.logs().slice(-6000)}`;
    expect(res.code, onFailure).toBe(0);
    expect(res.stderr).toContain('victim-start');
    expect(res.stderr).toContain('victim-end');
    expect(res.stderr).not.toContain('FORGED');

    const history = await kiln('history', 'inspect', ref);
    expect(history.stdout).toMatch(/Status:\s+Completed\n/);
    const logs = await kiln('history', 'logs', ref);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toContain('victim-end');
    expect(logs.stdout).not.toContain('FORGED');
    // Nor could the worker user read other builds' events.
    expect(spied).toEqual([]);
    spy.unsubscribe();
    await spying;
    // The tiers themselves never ran into a permission they lack.
    expect(cluster.logs()).not.toMatch(/NATS refused an operation/);
  }, 120_000);

  it('lets no client but a worker announce as a worker: 0000-rogue never joins', async () => {
    const announcements = [];
    for (const user of ['frontend', 'exporters', 'content'] as const) {
      const directory = createServiceDirectory(await connectAs(user), { intervalMs: 300 });
      announcements.push(
        await directory.announce({ tier: 'worker', id: `0000-rogue-${user}`, url: 'tcp://127.0.0.1:9', platforms: [{ os: 'linux', architecture: hostArch }], labels: {} }),
      );
    }
    await new Promise((r) => setTimeout(r, 3000));
    const workers = await kiln('workers');
    expect(workers.code, workers.stderr).toBe(0);
    expect(workers.stdout).toContain('worker-oci-1');
    expect(workers.stdout).not.toContain('0000-rogue');
    await Promise.all(announcements.map((a) => a.stop()));
  }, 60_000);
});
