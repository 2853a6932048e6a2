"""The scikit-learn estimator contract, checked on every public estimator in one place.

None of sklatom's estimators takes a 2-D feature table as input (they take images, probability
maps, structures or coordinate lists; ContourDescriptor and GraphDefectClassifier *produce*
tables), so ``parametrize_with_checks`` does not apply: its data checks feed 2-D arrays. The
data-free checks below apply to all of them, and ``__sklearn_tags__`` must say the input is
not a 2-D array.
"""

import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import (
    check_estimator_cloneable,
    check_get_params_invariance,
    check_mixin_order,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from sklatom import (
    AcquisitionModel,
    ContourDescriptor,
    FCNSegmenter,
    GraphDefectClassifier,
    MultisliceSimulator,
    PeakFinder,
)

ESTIMATORS = [MultisliceSimulator, AcquisitionModel, FCNSegmenter, PeakFinder,
              ContourDescriptor, GraphDefectClassifier]
CHECKS = [check_get_params_invariance, check_set_params, check_estimator_cloneable,
          check_no_attributes_set_in_init, check_parameters_default_constructible,
          check_mixin_order]


@pytest.mark.parametrize("Estimator", ESTIMATORS, ids=lambda e: e.__name__)
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_data_free_checks(Estimator, check):
    check(Estimator.__name__, Estimator())


@pytest.mark.parametrize("Estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_tags_say_the_input_is_not_a_table_and_params_round_trip(Estimator):
    est = Estimator()
    assert est.__sklearn_tags__().input_tags.two_d_array is False
    params = est.get_params()
    assert clone(est).get_params() == params
    assert est.set_params(**params).get_params() == params


@pytest.mark.parametrize("Estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_parameters_are_keyword_only(Estimator):
    import inspect

    params = list(inspect.signature(Estimator.__init__).parameters.values())[1:]
    assert params and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
    with pytest.raises(TypeError):
        Estimator(None)
