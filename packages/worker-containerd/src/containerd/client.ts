import * as grpc from '@grpc/grpc-js';
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type DescService, type MessageInitShape, type MessageShape } from '@bufbuild/protobuf';
import { containerdContainers, containerdContent, containerdImages, containerdLeases, containerdNamespaces, containerdSnapshots, containerdTasks } from '@kiln/api';
import { KilnError, type ErrorCode } from '@kiln/common';

/** Per-call options: a lease the call's new objects join, a deadline, cancellation. */
export interface ContainerdCallOptions {
  /** `containerd-lease` header: objects created by the call are held by this lease. */
  lease?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/**
 * A service's methods as functions: unary ones return a promise, server
 * streams an async iterable of responses, bidi streams take an async
 * iterable of requests (the request stream ends when it does).
 */
export type ServiceClient<S extends DescService> = {
  [K in keyof S['method']]: S['method'][K] extends { methodKind: 'unary'; input: infer I extends DescMessage; output: infer O extends DescMessage }
    ? (request: MessageInitShape<I>, options?: ContainerdCallOptions) => Promise<MessageShape<O>>
    : S['method'][K] extends { methodKind: 'server_streaming'; input: infer I extends DescMessage; output: infer O extends DescMessage }
      ? (request: MessageInitShape<I>, options?: ContainerdCallOptions) => AsyncIterable<MessageShape<O>>
      : S['method'][K] extends { methodKind: 'bidi_streaming'; input: infer I extends DescMessage; output: infer O extends DescMessage }
        ? (requests: AsyncIterable<MessageInitShape<I>>, options?: ContainerdCallOptions) => AsyncIterable<MessageShape<O>>
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
  readonly snapshots: ServiceClient<typeof containerdSnapshots.Snapshots>;
  readonly content: ServiceClient<typeof containerdContent.Content>;
  readonly images: ServiceClient<typeof containerdImages.Images>;
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
    snapshots: bind(containerdSnapshots.Snapshots),
    content: bind(containerdContent.Content),
    images: bind(containerdImages.Images),
    close: () => client.close(),
  };
}

function serviceClient<S extends DescService>(client: grpc.Client, service: S, namespace: string, address: string): ServiceClient<S> {
  const out: Record<string, unknown> = {};
  for (const method of service.methods) {
    const call = { client, method, namespace, address };
    if (method.methodKind === 'unary') {
      out[method.localName] = (request: MessageInitShape<DescMessage>, options: ContainerdCallOptions = {}) =>
        unary(client, method, request, namespace, address, options);
    } else if (method.methodKind === 'server_streaming') {
      out[method.localName] = (request: MessageInitShape<DescMessage>, options: ContainerdCallOptions = {}) => serverStream(call, request, options);
    } else if (method.methodKind === 'bidi_streaming') {
      out[method.localName] = (requests: AsyncIterable<MessageInitShape<DescMessage>>, options: ContainerdCallOptions = {}) => bidiStream(call, requests, options);
    }
  }
  return out as ServiceClient<S>;
}

function callMetadata(namespace: string, options: ContainerdCallOptions): { metadata: grpc.Metadata; callOptions: grpc.CallOptions } {
  const metadata = new grpc.Metadata();
  metadata.set('containerd-namespace', namespace);
  if (options.lease) metadata.set('containerd-lease', options.lease);
  const callOptions: grpc.CallOptions = {};
  if (options.timeoutMs !== undefined) callOptions.deadline = Date.now() + options.timeoutMs;
  return { metadata, callOptions };
}

interface StreamCall {
  client: grpc.Client;
  method: DescMethod;
  namespace: string;
  address: string;
}

/** Reads a gRPC response stream, mapping its error like a unary call's; breaking out of the loop cancels the call. */
async function* readStream(call: grpc.ClientReadableStream<unknown>, s: StreamCall, signal: AbortSignal | undefined): AsyncGenerator<never> {
  const onAbort = () => call.cancel();
  signal?.addEventListener('abort', onAbort, { once: true });
  let done = false;
  try {
    for await (const message of call) yield message as never;
    done = true;
  } catch (err) {
    if (signal?.aborted) throw new KilnError('canceled', `containerd ${s.method.parent.name}.${s.method.name}: canceled`);
    throw isServiceError(err) ? containerdError(err, `${s.method.parent.name}.${s.method.name}`, s.address) : err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    if (!done) call.cancel();
  }
}

function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'number' && 'metadata' in err;
}

function serverStream(s: StreamCall, request: MessageInitShape<DescMessage>, options: ContainerdCallOptions): AsyncIterable<unknown> {
  const path = `/${s.method.parent.typeName}/${s.method.name}`;
  const { metadata, callOptions } = callMetadata(s.namespace, options);
  return {
    [Symbol.asyncIterator]: () => {
      options.signal?.throwIfAborted();
      const call = s.client.makeServerStreamRequest(
        path,
        (m: MessageShape<DescMessage>) => Buffer.from(toBinary(s.method.input, m)),
        (b: Buffer) => fromBinary(s.method.output, b),
        create(s.method.input, request),
        metadata,
        callOptions,
      );
      return readStream(call, s, options.signal);
    },
  };
}

/** A bidi stream: requests are written as the caller's iterable yields them (with backpressure); the request side closes when it ends. */
function bidiStream(s: StreamCall, requests: AsyncIterable<MessageInitShape<DescMessage>>, options: ContainerdCallOptions): AsyncIterable<unknown> {
  const path = `/${s.method.parent.typeName}/${s.method.name}`;
  const { metadata, callOptions } = callMetadata(s.namespace, options);
  return {
    [Symbol.asyncIterator]: () => {
      options.signal?.throwIfAborted();
      const call = s.client.makeBidiStreamRequest(
        path,
        (m: MessageShape<DescMessage>) => Buffer.from(toBinary(s.method.input, m)),
        (b: Buffer) => fromBinary(s.method.output, b),
        metadata,
        callOptions,
      );
      void (async () => {
        try {
          for await (const r of requests) {
            if (!call.write(create(s.method.input, r))) await new Promise((resolve) => call.once('drain', resolve));
          }
          call.end();
        } catch (err) {
          call.cancel();
          call.emit('error', err);
        }
      })();
      return readStream(call, s, options.signal);
    },
  };
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
