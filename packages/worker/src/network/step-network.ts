import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import path from 'node:path';
import { execLight, type Logger } from '@kiln/common';
import { invokeCni } from './cni.js';
import { sweepMasqueradeRules } from './iptables-sweep.js';
import { createNetns, removeNetns } from './netns.js';
import { NetnsPool } from './netns-pool.js';
import type { CompiledNetworkOptions } from './options.js';
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
}

const CNI_VERSION = '1.0.0';
const STEP_IFNAME = 'eth0';

/**
 * Networks of exec steps (see NetworkMode). In mode "cni" each step gets a
 * namespace under `<stateDir>/net/netns/`, wired with loopback and a veth on
 * the bridge (host-local IPAM data under `<stateDir>/net/ipam`, never
 * /var/lib/cni); `release` runs the bridge plugin's DEL (veth, IP
 * allocation, masquerade rules) and removes the namespace. Container ids and
 * the CNI network name carry a tag of the state dir, so `reapStale` undoes
 * only what this worker's earlier life left.
 */
export class NetworkProvider {
  private readonly dir: string;
  private readonly tag: string;
  /** The CNI network name: in iptables comments and the IPAM data dir. */
  readonly networkName: string;
  /** Ready namespaces (mode "cni"). */
  private readonly pool: NetnsPool<StepRecord>;

  constructor(
    readonly options: CompiledNetworkOptions,
    stateDir: string,
    private readonly logger: Logger,
  ) {
    this.dir = path.join(stateDir, 'net');
    this.tag = createHash('sha256').update(path.resolve(stateDir)).digest('hex').slice(0, 8);
    this.networkName = `kiln-${this.tag}`;
    this.pool = new NetnsPool(options.poolSize, () => this.attach(), (record) => this.detach(record), logger);
  }

  get netnsDir(): string {
    return path.join(this.dir, 'netns');
  }

  get ipamDir(): string {
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

  private async attach(): Promise<StepRecord> {
    const started = performance.now();
    const containerId = `kiln-${this.tag}-${randomBytes(6).toString('hex')}`;
    const record: StepRecord = { containerId, netns: path.join(this.netnsDir, containerId), bridgeConfig: this.bridgeConfig() };
    await mkdir(this.netnsDir, { recursive: true, mode: 0o700 });
    await mkdir(this.recordsDir, { recursive: true, mode: 0o700 });
    await writeFile(this.recordFile(containerId), JSON.stringify(record), { mode: 0o600 });
    try {
      await createNetns(record.netns);
      const call = { containerId, netns: record.netns, pluginDir: this.options.cniPluginDir };
      await invokeCni({ ...call, command: 'ADD', ifname: 'lo' }, { cniVersion: CNI_VERSION, name: this.networkName, type: 'loopback' });
      await invokeCni({ ...call, command: 'ADD', ifname: STEP_IFNAME }, record.bridgeConfig);
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

  private recordFile(containerId: string): string {
    return path.join(this.recordsDir, `${containerId}.json`);
  }

  /**
   * Undoes what a killed worker on this state dir left: DEL for every step
   * record (its namespace still pinned, so veth, IP and rules go), every
   * namespace file, IP allocations of this network and masquerade rules
   * tagged with its name. Call before any step runs (and after stale
   * containers are gone). Never rejects.
   */
  async reapStale(): Promise<void> {
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
    // Allocations whose DEL never ran: one file per IP (plus the allocator's own lock and last-reserved files).
    const ipam = path.join(this.ipamDir, this.networkName);
    for (const name of await readdir(ipam).catch(() => [])) {
      if (/^[0-9.]+$/.test(name)) await rm(path.join(ipam, name), { force: true });
    }
    const rules = await sweepMasqueradeRules(this.networkName).catch((err: unknown) => {
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

  /** Tears the pooled namespaces down, then removes the bridge when no step is attached to it any more (the next step's ADD creates it again). */
  async close(): Promise<void> {
    if (this.options.mode !== 'cni') return;
    await this.pool.close();
    try {
      const { stdout } = await execLight('ip', ['-o', 'link', 'show', 'master', this.options.bridge]);
      if (stdout.trim() === '') await execLight('ip', ['link', 'delete', this.options.bridge, 'type', 'bridge']);
    } catch {
      // no such bridge: nothing ran
    }
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
