#include "test.h"
int main(void)
{
    return gs_test_summary();
}
