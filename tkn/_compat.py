"""Keep numba-cuda 0.30.4 working on numpy 2.5, which removed np.row_stack.

numba-cuda registers an overload for np.row_stack when its module is first lowered; on numpy 2.5 the attribute
is gone and every kernel compile fails with AttributeError. np.vstack is what row_stack always was.
"""
import numpy as np

if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack
