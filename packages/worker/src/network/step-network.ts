import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import path from 'node:path';
import { unmountFs, type Logger } from '@kiln/common';
import { bridgeLockFile, removeBridgeIfUnused } from './bridge-lock.js';
import { invokeCni } from './cni.js';
import { reapDeadOwners } from './host-reap.js';
import { sweepMasqueradeRules } from './iptables-sweep.js';
import { createNetns, removeNetns } from './netns.js';
import { NetnsPool } from './netns-pool.js';
import type { CompiledNetworkOptions } from './options.js';
import { ownersDir, removeOwnerRecord, thisProcessOwner, writeOwnerRecord } from './owner.js';
import { resolvConfFor } from './resolv-conf.js';

/** The network one exec step runs with (ExecSpec.network / networkNamespace) and its /etc/resolv.conf. */
export interface StepNetwork {
  network: 'sandbox' | 'host' | 'none';
  /** A wired namespace the step joins (mode "cni"). */
  networkNamespace?: string;
  resolvConf: string;
  /**
   * What `--add-host NAME=host-gateway` maps to: the host as the step reaches
   * it (the bridge's gateway address in a CNI namespace, else the host's
   * own address).
   */
  hostGateway: string;
  /**
   * Gives the network back; never rejects. Call once, after the process is
   * gone. `reusable`: the step ended with all its processes gone and without
   * CAP_NET_ADMIN, so a pooled namespace may serve the next step (see
   * NetnsPool); otherwise it is torn down (CNI DEL, namespace removed). The
   * promise resolves when that is done; callers need not wait for it.
   */
  release(outcome?: { reusable?: boolean }): Promise<void>;
}

/** What a step asked for: RUN --network=default|host|none (LLB NetMode). */
export type StepNetworkRequest = 'default' | 'host' | 'none';

/** Written before a step's namespace exists, removed after its DEL: what reapStale undoes after a crash. */
interface StepRecord {
  containerId: string;
  netns: string;
  bridgeConfig: Record<string, unknown>;
  /** The address host-local gave it (from the ADD result), for a release without DEL. */
  address?: string;
}

const CNI_VERSION = '1.0.0';
const STEP_IFNAME = 'eth0';

/**
 * Networks of exec steps (see NetworkMode). In mode "cni" each step gets a
 * namespace under `<stateDir>/net/netns/`, wired with loopback and a veth on
 * the bridge; `release` runs the bridge plugin's DEL (veth, IP allocation,
 * masquerade rules) and removes the namespace.
 *
 * Several daemons on one host may share a bridge and subnet (kiln0 and
 * 10.213.0.0/16 by default; the test suite runs many daemons at once), so
 * the addresses come from one host-wide host-local data dir per bridge +
 * subnet (`<hostStateDir>/ipam/<networkName>`, host-local flocks it for
 * each allocation), never a dir per daemon, which handed out the same
 * address twice on one bridge. That beats a range claimed per daemon root:
 * no range sizing, no limit on daemons, no claims to take over from dead
 * daemons. What a daemon owns is told by its container ids, `kiln-<tag of
 * the state dir>-<random>`: host-local writes the id into each allocation
 * file and ipMasq into each NAT rule's comment, so `reapStale` undoes only
 * what this state dir's earlier (killed) life left, never another live
 * daemon's addresses or rules.
 *
 * Daemons that die for good (SIGKILLed, their state dir removed: no restart
 * reaps them) are covered twice: on SIGTERM a daemon first drops its pooled
 * namespaces the cheap way (`releaseIdle`), and each start reaps host-wide
 * what dead daemons left (`reapDeadOwners`), told by the owner record
 * (pid + start time) of each daemon life, whose container ids are
 * `kiln-<tag>-<life>-<random>` (`ownerPrefix`).
 */
export class NetworkProvider {
  private readonly dir: string;
  private readonly stateDir: string;
  /** Starts every container id this state dir's daemons use: the mark of what they own on the shared bridge. */
  readonly containerIdPrefix: string;
  /** Starts every container id of this provider's life (`containerIdPrefix` + a random life id): what its host-wide owner record names. */
  readonly ownerPrefix: string;
  /** The CNI network name, shared by every daemon on this bridge + subnet: host-local's allocation dir, in iptables comments. */
  readonly networkName: string;
  /** Ready namespaces (mode "cni"). */
  private readonly pool: NetnsPool<StepRecord>;

  constructor(
    readonly options: CompiledNetworkOptions,
    stateDir: string,
    private readonly logger: Logger,
  ) {
    this.dir = path.join(stateDir, 'net');
    const tag = createHash('sha256').update(path.resolve(stateDir)).digest('hex').slice(0, 8);
    this.containerIdPrefix = `kiln-${tag}-`;
    this.ownerPrefix = `${this.containerIdPrefix}${randomBytes(4).toString('hex')}-`;
    this.stateDir = path.resolve(stateDir);
    this.networkName = `kiln-${options.bridge}-${options.subnet.replace('/', '-')}`;
    this.pool = new NetnsPool(options.poolSize, () => this.attach(), (record) => this.detach(record), logger, {
      keep: options.poolKeep,
      idleMs: options.poolIdleMs,
      // A pooled namespace is as CNI set it up (NetnsPool takes back only such), so the batch drop does.
      trim: (records) => this.dropReady(records),
    });
  }

  get netnsDir(): string {
    return path.join(this.dir, 'netns');
  }

  /** host-local's data dir (host-wide); this network's allocations are in `allocationsDir`. */
  get ipamDir(): string {
    return path.join(this.options.hostStateDir, 'ipam');
  }

  /** One file per allocated address (named by it, holding the container id), of every daemon on this bridge + subnet. */
  get allocationsDir(): string {
    return path.join(this.ipamDir, this.networkName);
  }

  /** Where IPAM data lived when each daemon had its own (before the host-wide dir): removed at start. */
  private get legacyIpamDir(): string {
    return path.join(this.dir, 'ipam');
  }

  private get recordsDir(): string {
    return path.join(this.dir, 'steps');
  }

  /** Sets up the network of one step; the caller must `release` it. */
  async forStep(request: StepNetworkRequest): Promise<StepNetwork> {
    const mode = request === 'default' ? this.options.mode : request;
    const noop = async () => undefined;
    if (mode === 'host') return { network: 'host', resolvConf: await resolvConfFor({ hostNetwork: true, source: this.options.resolvConf }), hostGateway: hostAddress(), release: noop };
    const resolvConf = await resolvConfFor({ hostNetwork: false, source: this.options.resolvConf });
    if (mode === 'none') return { network: request === 'none' ? 'none' : 'sandbox', resolvConf, hostGateway: hostAddress(), release: noop };
    const record = await this.pool.take();
    let released = false;
    return {
      network: 'sandbox',
      networkNamespace: record.netns,
      resolvConf,
      hostGateway: this.options.gateway,
      release: async (outcome) => {
        if (released) return;
        released = true;
        await this.pool.put(record, outcome?.reusable === true);
      },
    };
  }

  private bridgeConfig(): Record<string, unknown> {
    const o = this.options;
    return {
      cniVersion: CNI_VERSION,
      name: this.networkName,
      type: 'bridge',
      bridge: o.bridge,
      isGateway: true,
      ipMasq: true,
      ipam: {
        type: 'host-local',
        ranges: [[{ subnet: o.subnet, gateway: o.gateway }]],
        routes: [{ dst: '0.0.0.0/0' }],
        dataDir: this.ipamDir,
      },
    };
  }

  private lockFile?: Promise<string>;

  /** The host-wide dirs (root-only) and this bridge's lock file, made once. */
  private hostState(): Promise<string> {
    this.lockFile ??= (async () => {
      // New dirs are made 0700; of existing ones only Kiln's own ipam dir is narrowed (hostStateDir may be a dir Kiln does not own).
      await mkdir(this.allocationsDir, { recursive: true, mode: 0o700 });
      await chmod(this.ipamDir, 0o700);
      // Before any namespace of this life exists: who owns it, for other daemons' reaping (owner.ts).
      await mkdir(ownersDir(this.options.hostStateDir), { recursive: true, mode: 0o700 });
      await writeOwnerRecord(this.options.hostStateDir, thisProcessOwner(this.ownerPrefix, this.stateDir));
      return bridgeLockFile(this.options.hostStateDir, this.options.bridge);
    })();
    this.lockFile.catch(() => (this.lockFile = undefined));
    return this.lockFile;
  }

  private async attach(): Promise<StepRecord> {
    const started = performance.now();
    const containerId = `${this.ownerPrefix}${randomBytes(6).toString('hex')}`;
    const lock = await this.hostState();
    const record: StepRecord = { containerId, netns: path.join(this.netnsDir, containerId), bridgeConfig: this.bridgeConfig() };
    await mkdir(this.netnsDir, { recursive: true, mode: 0o700 });
    await mkdir(this.recordsDir, { recursive: true, mode: 0o700 });
    await writeFile(this.recordFile(containerId), JSON.stringify(record), { mode: 0o600 });
    try {
      await createNetns(record.netns);
      const call = { containerId, netns: record.netns, pluginDir: this.options.cniPluginDir };
      await invokeCni({ ...call, command: 'ADD', ifname: 'lo' }, { cniVersion: CNI_VERSION, name: this.networkName, type: 'loopback' });
      // Under the bridge's shared lock: no daemon's close removes the bridge while this ADD attaches to it.
      const result = await invokeCni({ ...call, command: 'ADD', ifname: STEP_IFNAME, sharedLock: lock }, record.bridgeConfig);
      const ip = (result?.ips as { address?: string }[] | undefined)?.[0]?.address?.split('/')[0];
      if (ip && /^[0-9.]+$/.test(ip)) record.address = ip;
    } catch (err) {
      await this.detach(record);
      throw err;
    }
    this.logger.debug({ containerId, ms: Math.round(performance.now() - started) }, 'step network attached');
    return record;
  }

  /** DEL (veth, IP, masquerade rules), then the namespace; the record stays when DEL failed, for the next start to retry. */
  private async detach(record: StepRecord): Promise<void> {
    const started = performance.now();
    let deleted = true;
    try {
      // Loopback needs no DEL: it goes with the namespace.
      await invokeCni({ command: 'DEL', containerId: record.containerId, netns: record.netns, ifname: STEP_IFNAME, pluginDir: this.options.cniPluginDir }, record.bridgeConfig);
    } catch (err) {
      deleted = false;
      this.logger.warn({ err, containerId: record.containerId }, 'CNI DEL of a step network failed; retried at the next start');
    }
    await removeNetns(record.netns).catch((err: unknown) => this.logger.warn({ err, netns: record.netns }, 'failed to remove a step network namespace'));
    if (deleted) await rm(this.recordFile(record.containerId), { force: true });
    this.logger.debug({ containerId: record.containerId, ms: Math.round(performance.now() - started) }, 'step network released');
  }

  /**
   * Drops ready namespaces of a stopping daemon without CNI DEL: nothing ran
   * in them, so unpinning the namespace frees it and its veth (the kernel
   * deletes both ends with it), removing the allocation file frees the
   * address; then one iptables batch removes their NAT rules. A handful of
   * file operations and an unmount (a system call, no process) before the
   * rules: done in milliseconds, ahead of the daemon's slower shutdown work.
   */
  private async dropReady(records: StepRecord[]): Promise<void> {
    const started = performance.now();
    await Promise.all(
      records.map(async (r) => {
        await unmountFs(r.netns, { lazy: true }).catch(() => undefined);
        await rm(r.netns, { force: true });
        if (r.address) {
          const file = path.join(this.allocationsDir, r.address);
          const owner = await readFile(file, 'utf8').catch(() => '');
          if (owner.startsWith(r.containerId)) await rm(file, { force: true });
        }
      }),
    );
    const rules = await sweepMasqueradeRules(records.map((r) => r.containerId)).catch((err: unknown) => {
      this.logger.warn({ err }, 'failed to remove the NAT rules of dropped step networks');
      return 0;
    });
    await Promise.all(records.map((r) => rm(this.recordFile(r.containerId), { force: true })));
    this.logger.info({ namespaces: records.length, rules, ms: Math.round(performance.now() - started) }, 'released pooled step networks');
  }

  /**
   * First thing on SIGTERM: stops filling the pool and drops its ready
   * namespaces (see dropReady); steps still running keep theirs until they
   * end. close() waits for it. Never rejects.
   */
  releaseIdle(): Promise<void> {
    if (this.options.mode !== 'cni') return Promise.resolve();
    return this.pool.drain((records) => this.dropReady(records));
  }

  private recordFile(containerId: string): string {
    return path.join(this.recordsDir, `${containerId}.json`);
  }

  /**
   * Undoes what a killed worker on this state dir left: DEL for every step
   * record (its namespace still pinned, so veth, IP and rules go), every
   * namespace file, then the IP allocations and masquerade rules of its
   * container ids (`containerIdPrefix`) whose DEL never ran; other daemons'
   * on the same bridge stay. Call before any step runs (and after stale
   * containers are gone). Then, host-wide, what dead daemons on other state
   * dirs left (see reapDeadOwners). Never rejects.
   */
  async reapStale(): Promise<void> {
    await this.reapOwnStale();
    if (this.options.mode === 'cni') await reapDeadOwners(this.options.hostStateDir, this.logger);
  }

  private async reapOwnStale(): Promise<void> {
    const records = await readdir(this.recordsDir).catch(() => null);
    if (records === null) return; // CNI never ran on this state dir
    for (const name of records) {
      try {
        const record = JSON.parse(await readFile(path.join(this.recordsDir, name), 'utf8')) as StepRecord;
        await this.detach(record);
      } catch (err) {
        this.logger.warn({ err, record: name }, 'failed to reap a stale step network');
      }
      await rm(path.join(this.recordsDir, name), { force: true });
    }
    for (const name of await readdir(this.netnsDir).catch(() => [])) await removeNetns(path.join(this.netnsDir, name));
    await rm(this.legacyIpamDir, { recursive: true, force: true });
    // Allocations whose DEL never ran: one file per IP holding the container id (plus host-local's lock and last-reserved files).
    // Another daemon's allocation files are only read; host-local makes each with O_EXCL, so removing one of ours races with nothing.
    for (const name of await readdir(this.allocationsDir).catch(() => [])) {
      if (!/^[0-9.]+$/.test(name)) continue;
      const file = path.join(this.allocationsDir, name);
      const owner = await readFile(file, 'utf8').catch(() => '');
      if (owner.startsWith(this.containerIdPrefix)) await rm(file, { force: true });
    }
    const rules = await sweepMasqueradeRules(this.containerIdPrefix).catch((err: unknown) => {
      this.logger.warn({ err }, 'failed to sweep stale masquerade rules');
      return 0;
    });
    if (rules > 0 || records.length > 0) this.logger.info({ steps: records.length, rules }, 'reaped stale step networks');
  }

  /** How many wired namespaces wait for steps. */
  get pooled(): number {
    return this.pool.ready;
  }

  /** Resolves when no namespace is being made or torn down in the background. */
  settled(): Promise<void> {
    return this.pool.settled();
  }

  /**
   * Tears the pooled namespaces down, then removes the bridge (and its
   * network's allocation dir) when no step of any daemon is attached to it
   * any more, under the bridge's exclusive lock (see bridge-lock.ts); the
   * next step's ADD creates it again.
   */
  async close(): Promise<void> {
    if (this.options.mode !== 'cni') return;
    await this.pool.close();
    try {
      await removeBridgeIfUnused(await this.hostState(), this.options.bridge, this.allocationsDir);
    } catch (err) {
      this.logger.warn({ err, bridge: this.options.bridge }, 'failed to remove the step network bridge');
    }
    // The owner record goes once nothing of this life is left (a step that outlived the close keeps it, for reaping).
    if ((await readdir(this.netnsDir).catch(() => [])).length === 0) await removeOwnerRecord(this.options.hostStateDir, this.ownerPrefix).catch(() => undefined);
  }
}

/**
 * The host's own address for host-gateway outside a CNI namespace: its
 * first non-loopback IPv4 address (as Docker uses its bridge's), else
 * loopback, which a host-network step reaches the host on too.
 */
function hostAddress(): string {
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}
