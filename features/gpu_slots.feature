Feature: GPU slots
  Each GPU group has a number of slots, and each slot may name the devices a
  job on it should use. A case holds one slot of its group from the moment it
  is sent until its job has ended; cases wait in the queue while every slot of
  their group is taken. The slots follow the configuration, and a slot is
  never lost to a case that has ended.

  Background:
    Given the GPU groups are:
      | group | slots | devices |
      | gpu_a | 2     | 0, 1    |
      | gpu_b | 1     |         |
    And caseflow is running

  Scenario: A case waits in the queue until a slot of its group is free
    Given the case "brain_0001" for gpu_b is running and waits to be released
    When the case folder "brain_0002" for gpu_b whose job waits to be released is dropped into the inbox
    Then the case "brain_0002" stays queued while "brain_0001" runs
    When the job of "brain_0001" is released
    Then the case "brain_0001" ends in success
    And the case "brain_0002" runs on slot 0 of gpu_b
    When the job of "brain_0002" is released
    Then the case "brain_0002" ends in success
    And no GPU slot is held

  Scenario Outline: The slot comes back when its case ends in <outcome>
    Given the case "brain_0011" for gpu_b is running and waits to be released
    And the case "brain_0012" for gpu_b waits in the queue
    When the job of "brain_0011" <ends>
    Then the case "brain_0011" ends in <outcome>
    And the case "brain_0012" runs on slot 0 of gpu_b

    Examples:
      | outcome   | ends                                       |
      | success   | is released                                |
      | failure   | ends with exit code 4                      |
      | not_found | is killed outright, leaving no exit code   |

  Scenario: The slot comes back when the upload fails for lack of space
    Given the GPU host has room for only 256 KB of case folders
    When the case folder "brain_0021" of 1 MB for gpu_b is dropped into the inbox
    Then the case "brain_0021" ends in failure
    And the reason given for "brain_0021" mentions "no space"
    And no GPU slot is held
    And no partial copy of "brain_0021" is left on the GPU host
    When the case folder "brain_0022" for gpu_b is dropped into the inbox
    Then the case "brain_0022" ends in success

  Scenario: A job sees the group, slot and devices it runs on
    Given the case "brain_0031" for gpu_a is running and waits to be released
    And the case "brain_0032" for gpu_a is running and waits to be released
    And the case "brain_0033" for gpu_b is running and waits to be released
    Then the jobs see:
      | case       | CASEFLOW_GPU_GROUP | CASEFLOW_GPU_SLOT | CUDA_VISIBLE_DEVICES |
      | brain_0031 | gpu_a              | 0                 | 0                    |
      | brain_0032 | gpu_a              | 1                 | 1                    |
      | brain_0033 | gpu_b              | 0                 | (not set)            |

  Scenario: The slots follow the configured groups when caseflow restarts
    Given the case "brain_0041" for gpu_b is running and waits to be released
    When caseflow is restarted with the GPU groups:
      | group | slots | devices |
      | gpu_a | 2     | 0, 1    |
      | gpu_c | 2     | 2, 3    |
    Then the GPU slots are:
      | group | slot | device | held by    | note    |
      | gpu_a | 0    | 0      |            |         |
      | gpu_a | 1    | 1      |            |         |
      | gpu_b | 0    |        | brain_0041 | retired |
      | gpu_c | 0    | 2      |            |         |
      | gpu_c | 1    | 3      |            |         |
    And the job of "brain_0041" is running
    When the job of "brain_0041" is released
    Then the case "brain_0041" ends in success
    And the GPU slots are:
      | group | slot | device | held by | note |
      | gpu_a | 0    | 0      |         |      |
      | gpu_a | 1    | 1      |         |      |
      | gpu_c | 0    | 2      |         |      |
      | gpu_c | 1    | 3      |         |      |

  Scenario: A slot left held by a case that has ended is freed when caseflow starts
    Given the case folder "brain_0051" for gpu_b was dropped into the inbox
    And the case "brain_0051" has ended in success
    And caseflow has been stopped
    When the database is left saying that slot 0 of gpu_b is held by "brain_0051", as after a crash
    And caseflow starts
    Then slot 0 of gpu_b is free
    And caseflow warned that it freed slot 0 of gpu_b, held by "brain_0051"

  Scenario: A case waiting for a slot does not keep caseflow busy
    Given caseflow looks at its cases once a second
    And the case "brain_0061" for gpu_b is running and waits to be released
    And the case "brain_0062" for gpu_b waits in the queue
    Then caseflow wakes up at most twice a second while "brain_0062" waits for 3 seconds
