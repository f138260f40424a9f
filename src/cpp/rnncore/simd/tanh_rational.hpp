// tanh in float as a rational function, shared by the vector headers:
//   tanh(x) ~ x P(x^2) / Q(x^2),  P of degree 6, Q of degree 3, Q(0) = 1,
// with x clamped to [-9, 9] (beyond, tanh(x) is 1 to within an ulp). The
// coefficients minimise the largest relative error over (0, 9] (7e-9 in
// exact arithmetic; tools/fit_tanh.py fits them). Evaluated in float with FMAs and a refined reciprocal estimate it
// stays within 7 ulp of tanh over every float (an exhaustive check made when
// it was written; tests/test_activations.py checks a dense grid per ISA).
// It needs no exp and no branch for small |x|: 17 vector operations instead
// of the 35 of 1 - 2/(exp(2|x|) + 1) with a polynomial near 0, which made
// Elman, leaky and clockwork steps at (200,16,64,64) 7-8% faster.
#pragma once

namespace rnncore {

struct TanhRational {
  static constexpr float kClamp = 9.0f;
  static constexpr float kP[7] = {9.999999939e-01f, 1.308412173e-01f,  3.104062453e-03f, 1.115488215e-05f,
                                  -2.022432145e-08f, 5.275804348e-11f, -8.479025804e-14f};
  static constexpr float kQ[4] = {1.0f, 4.641744925e-01f, 2.449565302e-02f, 2.546268474e-04f};
};

}  // namespace rnncore
