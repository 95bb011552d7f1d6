import type { LoadOptions, StreamOptions, SentenceEvent, Answer } from './stream-aligner.js';

/** The StreamAligner API with the models in a Web Worker. */
export declare class StreamAlignerWorker extends EventTarget {
  static load(options?: LoadOptions): Promise<StreamAlignerWorker>;
  readonly backend: 'webgpu' | 'cpu';
  readonly upstream: 'local' | 'remote';
  stream(query: string, options?: StreamOptions): AsyncGenerator<SentenceEvent, void, void>;
  correct(query: string, answer: string, options?: { maxSentences?: number; signal?: AbortSignal }): Promise<Answer>;
  terminate(): void;
}
