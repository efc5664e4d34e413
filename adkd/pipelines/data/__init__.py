"""Data for one category: the MVTec AD reader, the synthetic set and the validation gate."""
