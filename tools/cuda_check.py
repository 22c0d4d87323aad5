"""Check the GPU code without a GPU: the ptxas register/spill report of the CUDA build of
fastgen._C; load it and confirm every CUDA kernel it contains is registered with the dispatcher;
then compile every Triton kernel ahead of time for sm_80 and sm_90 (float32, float64, bfloat16),
so that a kernel Triton cannot lower fails here rather than on the first GPU that runs it.

    python tools/cuda_check.py --log build/cuda-build.log --lib build/cuda-lib
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys

ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>sm_\d+a?)'")
USED = re.compile(r"Used (?P<regs>\d+) registers")
FRAME = re.compile(r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, (?P<loads>\d+) bytes spill loads")


def demangle(names: list[str]) -> list[str]:
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
        return out.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return names


def ptxas_report(log: str) -> list[dict]:
    """One row per (kernel, arch): registers, stack frame and spill bytes."""
    rows: list[dict] = []
    for line in log.splitlines():
        if m := ENTRY.search(line):
            rows.append({"name": m["name"], "arch": m["arch"], "regs": None, "stack": 0, "spills": 0})
        elif rows and (m := FRAME.search(line)):
            rows[-1]["stack"] = int(m["stack"])
            rows[-1]["spills"] = int(m["stores"]) + int(m["loads"])
        elif rows and (m := USED.search(line)):
            rows[-1]["regs"] = int(m["regs"])
    for row, pretty in zip(rows, demangle([r["name"] for r in rows])):
        row["name"] = re.sub(r"\(.*", "", pretty.replace("(anonymous namespace)::", ""))
    return rows


def triton_kernels():
    """(name, jit function, signature, constexprs) for every Triton kernel, as the launchers call them."""
    import torch
    import triton.language as tl

    from fastgen.kernels import categorical_nll as nll
    from fastgen.kernels import gated_activation as gated
    from fastgen.kernels import masked_conv2d as conv

    cases = []
    for dtype, acc in (("fp32", tl.float32), ("fp64", tl.float64), ("bf16", tl.float32)):
        ptr = f"*{dtype}"
        precision = "tf32" if dtype == "fp32" else "ieee"
        blocks = dict(zip(("BLOCK_P", "BLOCK_CI", "BLOCK_CO"), conv._blocks(torch.device("cuda"))))
        gated_block = gated._block(1 << 20)  # the largest block the launchers pick
        cases.append((f"tap_conv_fwd[{dtype}]", conv._tap_conv_fwd_kernel,
                      dict(x_ptr=ptr, w_ptr=ptr, dy_ptr="*i32", dx_ptr="*i32", b_ptr=ptr, y_ptr=ptr, T="i32",
                           C_IN="i32", C_OUT="i32", H="i32", W="i32"),
                      dict(HAS_BIAS=True, ACC=acc, PRECISION=precision, **blocks)))
        cases.append((f"tap_conv_wgrad[{dtype}]", conv._tap_conv_wgrad_kernel,
                      dict(x_ptr=ptr, g_ptr=ptr, dy_ptr="*i32", dx_ptr="*i32", gw_ptr=ptr, T="i32", N="i32",
                           IMAGES_PER_SPLIT="i32", C_IN="i32", C_OUT="i32", H="i32", W="i32"),
                      dict(ACC=acc, PRECISION=precision, **blocks)))
        for cond in (0, 1, 2):
            cases.append((f"gated_fwd[{dtype}, cond={cond}]", gated._gated_fwd_kernel,
                          dict(x_ptr=ptr, c_ptr=ptr, y_ptr=ptr, C="i32", HW="i32"),
                          dict(COND=cond, ACC=acc, BLOCK=gated_block)))
            cases.append((f"gated_bwd[{dtype}, cond={cond}]", gated._gated_bwd_kernel,
                          dict(g_ptr=ptr, x_ptr=ptr, c_ptr=ptr, gx_ptr=ptr, gsum_ptr=ptr, C="i32", HW="i32"),
                          dict(COND=cond, ACC=acc, BLOCK=gated_block)))
        acc_ptr = "*fp64" if dtype == "fp64" else "*fp32"
        sizes = dict(L="i32", C="i32", HW="i32", s_n="i64", s_l="i64", s_c="i64")
        cases.append((f"categorical_nll_fwd[{dtype}]", nll._nll_fwd_kernel,
                      dict(z_ptr=ptr, t_ptr="*i64", lse_ptr=acc_ptr, part_ptr=acc_ptr, **sizes),
                      dict(ACC=acc, BLOCK=nll._BLOCK)))
        cases.append((f"categorical_nll_bwd[{dtype}]", nll._nll_bwd_kernel,
                      dict(g_ptr=ptr, z_ptr=ptr, t_ptr="*i64", lse_ptr=acc_ptr, gz_ptr=ptr, **sizes),
                      dict(ACC=acc, BLOCK=nll._BLOCK)))
        cases += _loss_kernels(dtype, ptr, acc_ptr, acc)
        cases += _dmol_kernels(dtype, ptr, acc_ptr, acc)
        cases += _feature_stats_kernels(dtype, ptr, acc)
        cases += _instance_norm_act_kernels(dtype, ptr, acc_ptr, acc)
        cases += _pixel_norm_kernels(dtype, ptr, acc_ptr, acc)
        cases += _minibatch_stddev_kernels(dtype, ptr, acc)
    return cases


def _pixel_norm_kernels(dtype: str, ptr: str, acc_ptr: str, acc) -> list:
    """Pixel norm: with and without the leaky ReLU in float32, with it in the other dtypes; tiles of
    64 positions and of one ((N, C) input); float64 reads its scalars from memory (as the launcher does)."""
    from fastgen.kernels import pixel_norm as pn

    cases = []
    in_memory = dtype == "fp64"
    s_ptr = "*fp64" if in_memory else ptr  # the launcher passes x where the scalars are arguments
    sizes = dict(C="i32", S="i32", tiles="i32")
    for act in (True, False) if dtype == "fp32" else (True,):
        for c, s in ((512, 256), (512, 1)):
            block_c, block_s = pn._blocks(c, s)
            const = dict(ACT=act, SCALARS_IN_MEMORY=in_memory, ACC=acc, BLOCK_C=block_c, BLOCK_S=block_s)
            cases.append((f"pixel_norm_fwd[{dtype}, act={act}, S={s}]", pn._pixel_norm_fwd_kernel,
                          dict(x_ptr=ptr, s_ptr=s_ptr, y_ptr=ptr, rstd_ptr=acc_ptr, **sizes, eps="fp32", slope="fp32"),
                          const))
            cases.append((f"pixel_norm_bwd[{dtype}, act={act}, S={s}]", pn._pixel_norm_bwd_kernel,
                          dict(g_ptr=ptr, x_ptr=ptr, rstd_ptr=acc_ptr, s_ptr=s_ptr, gx_ptr=ptr, **sizes, slope="fp32"),
                          const))
    return cases


def _minibatch_stddev_kernels(dtype: str, ptr: str, acc) -> list:
    """Minibatch standard deviation at the largest block the launchers pick; float64 reads eps from memory."""
    from fastgen.kernels import minibatch_stddev as ms

    in_memory = dtype == "fp64"
    s_ptr = "*fp64" if in_memory else ptr
    sizes = dict(M="i32", G="i32", CHW="i32", HW="i32", eps="fp32")
    const = dict(SCALARS_IN_MEMORY=in_memory, ACC=acc, BLOCK=ms._block(1 << 20))
    return [(f"minibatch_stddev_fwd[{dtype}]", ms._minibatch_stddev_fwd_kernel,
             dict(x_ptr=ptr, s_ptr=s_ptr, y_ptr=ptr, **sizes), const),
            (f"minibatch_stddev_bwd[{dtype}]", ms._minibatch_stddev_bwd_kernel,
             dict(g_ptr=ptr, x_ptr=ptr, s_ptr=s_ptr, gx_ptr=ptr, **sizes), const)]


def _instance_norm_act_kernels(dtype: str, ptr: str, acc_ptr: str, acc) -> list:
    """Instance norm + activation: every activation with and without the affine parameters in
    float32, one of each in the other dtypes; float64 reads its scalars from memory (as the
    launcher does), at the largest block the launcher picks."""
    from fastgen.kernels import instance_norm_act as ina

    cases = []
    in_memory = dtype == "fp64"
    s_ptr = "*fp64" if in_memory else ptr  # the launcher passes x where the scalars are arguments
    block = ina._block(1 << 20)
    for act in range(3) if dtype == "fp32" else (1,):
        for affine in (True, False) if dtype == "fp32" else (True,):
            const = dict(HAS_W=affine, HAS_B=affine, ACT=act, SCALARS_IN_MEMORY=in_memory, ACC=acc, BLOCK=block)
            cases.append((f"instance_norm_act_fwd[{dtype}, act={act}, affine={affine}]",
                          ina._instance_norm_act_fwd_kernel,
                          dict(x_ptr=ptr, w_ptr=ptr, b_ptr=ptr, s_ptr=s_ptr, y_ptr=ptr, mean_ptr=acc_ptr,
                               rstd_ptr=acc_ptr, C="i32", HW="i32", eps="fp32", slope="fp32"), const))
            cases.append((f"instance_norm_act_bwd[{dtype}, act={act}, affine={affine}]",
                          ina._instance_norm_act_bwd_kernel,
                          dict(g_ptr=ptr, x_ptr=ptr, w_ptr=ptr, b_ptr=ptr, mean_ptr=acc_ptr, rstd_ptr=acc_ptr,
                               s_ptr=s_ptr, gx_ptr=ptr, sum_g_ptr=acc_ptr, sum_gxhat_ptr=acc_ptr, C="i32", HW="i32",
                               slope="fp32"), dict(const, WANT_X=True)))
    return cases


def _feature_stats_kernels(dtype: str, ptr: str, acc) -> list:
    """Streaming feature statistics: float32 (TF32 and IEEE products) and float64 features only
    (the op takes no other dtype), at the GPU block sizes the launcher picks."""
    import torch

    from fastgen.kernels import feature_stats as fs

    if dtype == "bf16":
        return []
    block, block_b = fs._blocks(torch.device("cuda"))
    sig = dict(f_ptr=ptr, s_ptr=ptr, total_ptr="*fp64", cross_ptr="*fp64", B="i32", D="i32", s_fb="i32", s_fd="i32",
               s_s="i32")
    return [(f"feature_stats_update[{dtype}, {precision}]", fs._feature_stats_update_kernel, sig,
             dict(ACC=acc, PRECISION=precision, CHUNK=fs.CHUNK, BLOCK=block, BLOCK_B=block_b))
            for precision in (("tf32", "ieee") if dtype == "fp32" else ("ieee",))]


def _dmol_kernels(dtype: str, ptr: str, acc_ptr: str, acc) -> list:
    """PixelCNN++'s mixture kernels: RGB and grey in float32, RGB in the other dtypes."""
    from fastgen.kernels import dmol

    cases = []
    sizes = dict(HW="i32", M="i32", half="fp32", log_bin="fp32")
    for c in (3, 1) if dtype == "fp32" else (3,):
        const = dict(C=c, ACC=acc, BLOCK=dmol._BLOCK)
        cases.append((f"dmol_nll_fwd[{dtype}, C={c}]", dmol._nll_fwd_kernel,
                      dict(x_ptr=ptr, p_ptr=ptr, lp_ptr=acc_ptr, part_ptr=acc_ptr, **sizes), const))
        cases.append((f"dmol_nll_bwd[{dtype}, C={c}]", dmol._nll_bwd_kernel,
                      dict(g_ptr=ptr, x_ptr=ptr, p_ptr=ptr, lp_ptr=acc_ptr, gp_ptr=ptr, **sizes), const))
        cases.append((f"dmol_sample[{dtype}, C={c}]", dmol._sample_kernel,
                      dict(p_ptr=ptr, u_ptr=ptr, out_ptr=ptr, HW="i32", M="i32", steps="fp32"), const))
    return cases


def _loss_kernels(dtype: str, ptr: str, acc_ptr: str, acc) -> list:
    """The VAE and GAN loss kernels: every likelihood and loss term in float32, one of each in the
    other dtypes (they differ only in loads and stores)."""
    from fastgen.kernels import gan_loss as gan
    from fastgen.kernels import gradient_penalty as gp
    from fastgen.kernels import reparameterize as rep
    from fastgen.kernels import vae_nelbo as vae
    import triton.language as tl

    cases = []
    series = 0.002 if dtype == "fp64" else 0.1
    for name, lik in vae._LIKELIHOODS.items():
        if dtype != "fp32" and name != "logistic":
            continue
        x_ptr = "*i64" if name in ("categorical", "logistic") else ptr
        sizes = dict(D="i32", P="i32", levels="i32")
        cases.append((f"vae_recon_nll[{dtype}, {name}]", vae._recon_nll_kernel,
                      dict(r_ptr=ptr, x_ptr=x_ptr, part_ptr=acc_ptr, **sizes),
                      dict(LIK=lik, ACC=acc, SERIES_BELOW=series, BLOCK=vae._BLOCK)))
        cases.append((f"vae_recon_grad[{dtype}, {name}]", vae._recon_grad_kernel,
                      dict(g_ptr=ptr, r_ptr=ptr, x_ptr=x_ptr, gr_ptr=ptr, **sizes),
                      dict(LIK=lik, ACC=acc, SERIES_BELOW=series, BLOCK=vae._BLOCK)))
    cases.append((f"vae_kl[{dtype}]", vae._kl_kernel, dict(mu_ptr=ptr, lv_ptr=ptr, kl_ptr=acc_ptr, Z="i32"),
                  dict(ACC=acc, BLOCK=vae._BLOCK)))
    cases.append((f"vae_kl_grad[{dtype}]", vae._kl_grad_kernel,
                  dict(g_ptr=ptr, mu_ptr=ptr, lv_ptr=ptr, gmu_ptr=ptr, glv_ptr=ptr, Z="i32", beta="fp32"),
                  dict(WANT_MU=True, WANT_LV=True, ACC=acc, BLOCK=vae._BLOCK)))
    cases.append((f"reparameterize_fwd[{dtype}]", rep._reparameterize_fwd_kernel,
                  dict(mu_ptr=ptr, lv_ptr=ptr, eps_ptr=ptr, z_ptr=ptr, n="i32"), dict(ACC=acc, BLOCK=rep._BLOCK)))
    cases.append((f"reparameterize_bwd[{dtype}]", rep._reparameterize_bwd_kernel,
                  dict(g_ptr=ptr, lv_ptr=ptr, eps_ptr=ptr, glv_ptr=ptr, geps_ptr=ptr, n="i32"),
                  dict(WANT_LV=True, WANT_EPS=True, ACC=acc, BLOCK=rep._BLOCK)))
    for term in range(9) if dtype == "fp32" else (gan.SOFTPLUS,):
        cases.append((f"gan_loss_fwd[{dtype}, term {term}]", gan._gan_loss_fwd_kernel,
                      dict(v_ptr=ptr, part_ptr=acc_ptr, n="i32"), dict(TERM=term, ACC=acc, BLOCK=gan._BLOCK)))
        cases.append((f"gan_loss_bwd[{dtype}, term {term}]", gan._gan_loss_bwd_kernel,
                      dict(g_ptr=ptr, v_ptr=ptr, out_ptr=ptr, n="i32"), dict(TERM=term, ACC=acc, BLOCK=gan._BLOCK)))
    # The launcher sums the squares in float64 whatever the dtype (as the reference does).
    cases.append((f"gradient_penalty_norm[{dtype}]", gp._norm_kernel, dict(g_ptr=ptr, norm_ptr=acc_ptr, D="i32"),
                  dict(ACC=tl.float64, BLOCK=gp._BLOCK)))
    cases.append((f"gradient_penalty_bwd[{dtype}]", gp._gradient_penalty_bwd_kernel,
                  dict(go_ptr=ptr, g_ptr=ptr, norm_ptr=acc_ptr, out_ptr=ptr, D="i32", weight="fp32", N="fp32"),
                  dict(ACC=acc, BLOCK=gp._BLOCK)))
    return cases


def compile_triton_kernels() -> int:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    failures = 0
    for arch in (80, 90):
        for name, fn, signature, constexprs in triton_kernels():
            signature = dict(signature, **{k: "constexpr" for k in constexprs})
            try:
                compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                                          target=GPUTarget("cuda", arch, 32))
                shared = compiled.metadata.shared
                print(f"triton sm_{arch} {name:<32} ok  (shared memory {shared} B)")
            except Exception as exc:  # report every kernel, then fail
                failures += 1
                print(f"triton sm_{arch} {name:<32} FAILED: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", required=True, help="build log containing the `-Xptxas -v` output")
    parser.add_argument("--lib", required=True, help="--build-lib folder holding fastgen/_C*.so")
    args = parser.parse_args()

    rows = ptxas_report(open(args.log).read())
    if not rows:
        print("no ptxas report found in the build log: were CUDA sources compiled?", file=sys.stderr)
        return 1
    print(f"{'kernel':<72} {'arch':<6} {'regs':>4} {'stack':>6} {'spill':>6}")
    for r in rows:
        print(f"{r['name'][:72]:<72} {r['arch']:<6} {r['regs']!s:>4} {r['stack']:>6} {r['spills']:>6}")
    spilled = [r for r in rows if r["spills"]]
    print(f"{len(rows)} kernel builds, {len(spilled)} with register spills")

    (library,) = glob.glob(os.path.join(args.lib, "fastgen", "_C*.so"))
    os.environ["FASTGEN_EXT_PATH"] = os.path.abspath(library)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import torch

    import fastgen
    from fastgen.ops import implementations

    fastgen.info()
    cuda_ops = [op for op, served in implementations().items() if served["CUDA"].startswith("CUDA C++")]
    expected = sorted({m.group(1) for src in glob.glob("csrc/cuda/*.cu")
                       for m in re.finditer(r'm\.impl\("(\w+)"', open(src).read())})
    missing = sorted(set(expected) - set(cuda_ops))
    if missing:
        print(f"CUDA kernels not registered after loading {library}: {missing}", file=sys.stderr)
        return 1
    print(f"loaded {library} (torch {torch.__version__}, CUDA {torch.version.cuda}); "
          f"CUDA C++ kernels registered: {', '.join(cuda_ops)}")
    failures = compile_triton_kernels()
    if failures:
        print(f"{failures} Triton kernel builds failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
