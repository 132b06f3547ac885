import * as grpc from '@grpc/grpc-js';
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type DescService, type MessageInitShape, type MessageShape } from '@bufbuild/protobuf';
import { containerdContainers, containerdLeases, containerdNamespaces, containerdTasks } from '@kiln/api';
import { KilnError, type ErrorCode } from '@kiln/common';

/** Per-call options: a lease the call's new objects join, a deadline, cancellation. */
export interface ContainerdCallOptions {
  /** `containerd-lease` header: objects created by the call are held by this lease. */
  lease?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** The unary methods of a service as promise-returning functions. */
export type ServiceClient<S extends DescService> = {
  [K in keyof S['method']]: S['method'][K] extends { input: infer I extends DescMessage; output: infer O extends DescMessage }
    ? (request: MessageInitShape<I>, options?: ContainerdCallOptions) => Promise<MessageShape<O>>
    : never;
};

/**
 * A typed gRPC client of containerd on its unix socket: one service client
 * per containerd service Kiln calls, every call in one namespace (the
 * `containerd-namespace` header). Messages are (de)serialized with the
 * protobuf-es types generated from proto/containerd.
 */
export interface ContainerdClient {
  readonly address: string;
  readonly namespace: string;
  readonly namespaces: ServiceClient<typeof containerdNamespaces.Namespaces>;
  readonly leases: ServiceClient<typeof containerdLeases.Leases>;
  readonly containers: ServiceClient<typeof containerdContainers.Containers>;
  readonly tasks: ServiceClient<typeof containerdTasks.Tasks>;
  close(): void;
}

export interface ContainerdClientOptions {
  /** Path of containerd's gRPC socket, e.g. /run/containerd/containerd.sock. */
  address: string;
  /** containerd namespace of every object Kiln makes. Default "kiln". */
  namespace?: string;
}

/** Connects lazily (the first call dials). */
export function createContainerdClient(opts: ContainerdClientOptions): ContainerdClient {
  const namespace = opts.namespace ?? 'kiln';
  const target = `unix://${opts.address.replace(/^unix:\/\//, '')}`;
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), {
    // containerd answers large List responses; the default 4 MiB is enough for the rest.
    'grpc.max_receive_message_length': 16 * 1024 * 1024,
  });
  const bind = <S extends DescService>(service: S) => serviceClient(client, service, namespace, opts.address);
  return {
    address: opts.address,
    namespace,
    namespaces: bind(containerdNamespaces.Namespaces),
    leases: bind(containerdLeases.Leases),
    containers: bind(containerdContainers.Containers),
    tasks: bind(containerdTasks.Tasks),
    close: () => client.close(),
  };
}

function serviceClient<S extends DescService>(client: grpc.Client, service: S, namespace: string, address: string): ServiceClient<S> {
  const out: Record<string, unknown> = {};
  for (const method of service.methods) {
    out[method.localName] = (request: MessageInitShape<DescMessage>, options: ContainerdCallOptions = {}) =>
      unary(client, method, request, namespace, address, options);
  }
  return out as ServiceClient<S>;
}

function unary(
  client: grpc.Client,
  method: DescMethod,
  request: MessageInitShape<DescMessage>,
  namespace: string,
  address: string,
  options: ContainerdCallOptions,
): Promise<unknown> {
  const path = `/${method.parent.typeName}/${method.name}`;
  const metadata = new grpc.Metadata();
  metadata.set('containerd-namespace', namespace);
  if (options.lease) metadata.set('containerd-lease', options.lease);
  const callOptions: grpc.CallOptions = {};
  if (options.timeoutMs !== undefined) callOptions.deadline = Date.now() + options.timeoutMs;
  const message = create(method.input, request);
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(new KilnError('canceled', `containerd ${method.parent.name}.${method.name}: canceled`));
      return;
    }
    const call = client.makeUnaryRequest(
      path,
      (m: MessageShape<DescMessage>) => Buffer.from(toBinary(method.input, m)),
      (b: Buffer) => fromBinary(method.output, b),
      message,
      metadata,
      callOptions,
      (err, value) => {
        options.signal?.removeEventListener('abort', onAbort);
        if (err) reject(containerdError(err, `${method.parent.name}.${method.name}`, address));
        else resolve(value);
      },
    );
    const onAbort = () => call.cancel();
    options.signal?.addEventListener('abort', onAbort, { once: true });
  });
}

const STATUS_CODES: Partial<Record<grpc.status, ErrorCode>> = {
  [grpc.status.INVALID_ARGUMENT]: 'invalid_argument',
  [grpc.status.NOT_FOUND]: 'not_found',
  [grpc.status.ALREADY_EXISTS]: 'already_exists',
  [grpc.status.FAILED_PRECONDITION]: 'failed_precondition',
  [grpc.status.PERMISSION_DENIED]: 'permission_denied',
  [grpc.status.UNAVAILABLE]: 'unavailable',
  [grpc.status.CANCELLED]: 'canceled',
  [grpc.status.DEADLINE_EXCEEDED]: 'deadline_exceeded',
  [grpc.status.UNIMPLEMENTED]: 'unimplemented',
};

/** A KilnError with the gRPC status mapped to Kiln's code, naming the call and the socket. */
function containerdError(err: grpc.ServiceError, call: string, address: string): KilnError {
  const code = STATUS_CODES[err.code as grpc.status] ?? 'internal';
  const where = err.code === grpc.status.UNAVAILABLE ? ` (is containerd running on ${address}?)` : '';
  return new KilnError(code, `containerd ${call} failed: ${err.details || err.message}${where}`, { call }, { cause: err });
}

/** True when `err` is a KilnError with one of `codes` (e.g. a delete of something already gone). */
export function hasCode(err: unknown, ...codes: ErrorCode[]): boolean {
  return err instanceof KilnError && codes.includes(err.code);
}
