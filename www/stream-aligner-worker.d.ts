import type { LoadOptions, StreamOptions, SentenceEvent, Answer, Generation } from './stream-aligner.js';

/** The StreamAligner API with the models in a Web Worker. */
export declare class StreamAlignerWorker extends EventTarget {
  static load(options?: LoadOptions): Promise<StreamAlignerWorker>;
  readonly backend: 'webgpu' | 'cpu';
  readonly notice: string | null;
  readonly upstream: 'local' | 'remote';
  /** How many threads run the CPU kernels, in the worker (1 on WebGPU). */
  readonly threads: number;
  /** The upstream model's greedy continuation of `prompt` as it is (no chat template), with its timings. */
  generate(prompt: string, options?: { maxTokens?: number; signal?: AbortSignal }): Promise<Generation>;
  stream(query: string, options?: StreamOptions): AsyncGenerator<SentenceEvent, void, void>;
  /** Post-hoc correction; each sentence's event also goes to 'sentence' listeners. */
  correct(query: string, answer: string, options?: { maxSentences?: number; calculator?: boolean; copyMargin?: number; repair?: boolean; signal?: AbortSignal }): Promise<Answer>;
  addEventListener(type: 'sentence', listener: (e: CustomEvent<SentenceEvent>) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  terminate(): void;
}
