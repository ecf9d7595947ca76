/**
 * How a fused routine is declared: its named inputs and outputs (a trailing "?" marks one that
 * may be absent), the type of its attributes, and whether it is elementwise. The declaration is
 * the routine's contract with backends: a kernel receives its buffers by these names, so a
 * misnamed input or a mistyped attribute does not compile (see ./registry.ts).
 */
import type { Buffer } from "../backend.js"

/** A number list: a table the kernel takes whole (a scaled RoPE's frequencies). */
export type AttrValue = number | boolean | string | readonly number[]
export type Attrs = Readonly<Record<string, AttrValue>>

export interface RoutineDecl<
  N extends string = string,
  I extends string = string,
  O extends string = string,
  A extends Attrs = Attrs,
> {
  readonly name: N
  /** Input names in the order the region takes them; one marked "name?" may be absent. */
  readonly inputs: readonly I[]
  readonly outputs: readonly O[]
  /**
   * Executor directive, not a kernel attribute: each output element depends only on the same
   * element of the inputs, so an output may be written over an input nobody reads afterwards.
   */
  readonly elementwise: boolean
  /** Type only: the attributes its kernel receives. */
  readonly attrs?: A
}

/**
 * Declares a routine; give the attributes' type first: `declareRoutine<{ eps: number }>()("rmsNorm",
 * { inputs: ["x", "w"], outputs: ["y"] })`.
 */
export const declareRoutine =
  <A extends Attrs = Record<never, never>>() =>
  <const N extends string, const I extends string, const O extends string>(
    name: N,
    io: Io<I, O>,
  ): RoutineDecl<N, I, O, A> => ({ name, ...io, elementwise: io.elementwise === true })

interface Io<I extends string, O extends string> {
  readonly inputs: readonly I[]
  readonly outputs: readonly O[]
  readonly elementwise?: true
}

/** A declared name without its "?". */
export const bareName = (name: string): string => name.replace(/\?$/, "")

type Required<N extends string> = N extends `${string}?` ? never : N
type Optional<N extends string> = N extends `${infer B}?` ? B : never
/** Buffers (or shapes) by name: the required ones always there, the optional ones maybe. */
export type ByName<N extends string, T> = { readonly [K in Required<N>]: T } & { readonly [K in Optional<N>]?: T }

type Shape = readonly number[]

/** What a kernel for routine `D` receives. */
export interface RoutineCall<D extends RoutineDecl> {
  readonly inputs: ByName<InputName<D>, Buffer>
  readonly outputs: ByName<OutputName<D>, Buffer>
  readonly shapes: {
    readonly inputs: ByName<InputName<D>, Shape>
    readonly outputs: ByName<OutputName<D>, Shape>
  }
  readonly attrs: AttrsOf<D>
}

type InputName<D> = D extends RoutineDecl<string, infer I, string, Attrs> ? I : never
type OutputName<D> = D extends RoutineDecl<string, string, infer O, Attrs> ? O : never
export type AttrsOf<D> = D extends RoutineDecl<string, string, string, infer A> ? A : never

type ShapesByName = Readonly<Record<string, Shape>>

/** A call seen without its routine's names (for code that wraps every kernel alike). */
export interface AnyRoutineCall {
  readonly inputs: Readonly<Record<string, Buffer>>
  readonly outputs: Readonly<Record<string, Buffer>>
  readonly shapes: { readonly inputs: ShapesByName; readonly outputs: ShapesByName }
  readonly attrs: Attrs
}
